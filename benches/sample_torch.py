#!/usr/bin/env python3
"""DDIM sampling loop in PyTorch (CPU) over the same UNet and weights as an `idflow run` of
`benches/pipelines/ddim.yaml`, for the samples/s comparison in docs/performance.md.

Usage:
    nice -n 15 python benches/sample_torch.py WEIGHTS.safetensors --config tiny|full \\
        [--samples 64] [--batch 16] [--steps 50] [--threads 2] [--check DDIM_IO.safetensors] [--json OUT]

WEIGHTS is a checkpoint `bench_onnx --export` wrote (`unet_{tiny,full}_weights.safetensors`).
The loop is the update of idflow's `models/src/sampler.rs` with η = 0 (the DDIM of Song et al.):
timesteps t = T−k, …, k, 0 with k = T/steps; x0 = (x_t − sqrt(1−ᾱ_t)·eps)/sqrt(ᾱ_t);
x_prev = sqrt(ᾱ_prev)·x0 + sqrt(1−ᾱ_prev)·eps, ᾱ_prev = 1 after t = 0. The schedule is the
official linear one (β from 1e-4 to 0.02 over T = 1000, float32), which `diffuse` also uses for
a checkpoint without schedule buffers. Contexts are random unit vectors, x_T standard normal.

`--check` runs the loop on the x_T and context in DDIM_IO (`ddim_tiny_io.safetensors` from
`bench_onnx --export`) and compares with idflow's result before timing. Prints samples/s, the
time inside the UNet calls and the loop overhead; `--json` writes them.
Needs: torch, safetensors (and benches/models_torch.py next to this file).
"""
import json
import os
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models_torch import MODELS, load_strict  # noqa: E402


def arg(args, flag, default):
    return type(default)(args[args.index(flag) + 1]) if flag in args else default


def linear_alpha_bars(t_total=1000):
    """ᾱ exactly as idflow's `DdpmSchedule::linear`: float32 β, cumulative log-sum in float64."""
    scale = 1000.0 / t_total
    betas = torch.linspace(scale * 1e-4, scale * 0.02, t_total, dtype=torch.float32)
    logs = torch.log(1.0 - betas).double()
    return torch.exp(torch.cumsum(logs, 0).float())


def ddim(model, x, context, alpha_bars, steps, timer):
    """DDIM (η = 0) from x_T; `timer` accumulates seconds inside the UNet calls."""
    t_total = alpha_bars.shape[0]
    skip = max(t_total // max(steps, 1), 1)
    b = x.shape[0]
    for t in reversed(range(0, t_total, skip)):
        tt = torch.full((b,), t, dtype=torch.int64)
        t0 = time.perf_counter()
        eps = model(x, tt, context)
        timer[0] += time.perf_counter() - t0
        a_t = alpha_bars[t].double()
        a_prev = alpha_bars[t - skip].double() if t - skip >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = (x.double() - (1 - a_t).sqrt() * eps.double()) / a_t.sqrt()
        x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps.double()).float()
    return x


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__)
        sys.exit(2)
    weights = args[0]
    config = arg(args, "--config", "tiny")
    samples = arg(args, "--samples", 64)
    batch = arg(args, "--batch", 16)
    steps = arg(args, "--steps", 50)
    threads = arg(args, "--threads", 2)
    check = arg(args, "--check", "")
    out_json = arg(args, "--json", "")
    torch.set_num_threads(threads)
    model = load_strict(MODELS[f"unet_{config}"](), weights)
    alpha_bars = linear_alpha_bars()
    result = {"config": config, "samples": samples, "batch": batch, "steps": steps, "threads": threads,
              "torch": torch.__version__}
    with torch.no_grad():
        if check:
            io = load_file(check)
            got = ddim(model, io["x_T"], io["context"], alpha_bars, steps, [0.0])
            diff = (got - io["x0"]).abs().max().item()
            scale = io["x0"].abs().max().item()
            print(f"check against idflow's DDIM-{steps}: max |diff| {diff:.2e} (max |x0| {scale:.2e})")
            result["check_max_abs_diff"] = diff
            if not diff <= 1e-3 * max(scale, 1.0):
                sys.exit(f"the PyTorch DDIM loop disagrees with idflow's (max |diff| {diff:.3e})")
        g = torch.Generator().manual_seed(0)
        timer = [0.0]
        t0 = time.perf_counter()
        done = 0
        while done < samples:
            n = min(batch, samples - done)
            x = torch.randn((n, 3, 32, 32), generator=g)
            c = torch.randn((n, 512), generator=g)
            c = c / c.norm(dim=1, keepdim=True)
            ddim(model, x, c, alpha_bars, steps, timer)
            done += n
        wall = time.perf_counter() - t0
    result.update({"wall_seconds": wall, "model_seconds": timer[0], "samples_per_second": samples / wall,
                   "loop_overhead": wall / timer[0]})
    print(f"torch DDIM-{steps} {config}: {samples} samples in batches of {batch}: {wall:.2f} s, "
          f"{samples / wall:.3f} samples/s; UNet calls {timer[0]:.2f} s (wall / UNet {wall / timer[0]:.4f})")
    if out_json:
        with open(out_json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
