#!/usr/bin/env python3
"""Markdown tables of the figures `benches/run_all.sh OUT_DIR` measured.

Usage:
    python benches/summarize.py OUT_DIR

Reads OUT_DIR/forward_torch.json (models_torch.py), OUT_DIR/*.report.json (`idflow run
--report`), OUT_DIR/*.process.json (outer wall time of each `idflow run`), OUT_DIR/ddim_*_torch.json
(sample_torch.py), OUT_DIR/embed_python.json (embed_onnx.py) and OUT_DIR/load.txt; prints what
is there. Standard library only.
"""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def node(report, op):
    return next(o for o in report["operators"] if o["op"] == op)


def pipeline(d, name, op):
    """(report, process seconds, the operator's line) of one `idflow run`, or None."""
    r = load(d, f"{name}.report.json")
    if r is None:
        return None
    p = load(d, f"{name}.process.json") or {}
    return r, p.get("process_seconds", float("nan")), node(r, op)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    d = sys.argv[1]
    fwd = load(d, "forward_torch.json")
    if fwd:
        print("## Model forwards (median ms per call)\n")
        print("| case | idflow ORT | idflow candle | PyTorch | PyTorch / ORT | PyTorch / candle | timed calls (ORT+candle / PyTorch) | max abs diff (PyTorch vs ORT) |")
        print("|---|---|---|---|---|---|---|---|")
        rust = load(d, "models/timings.json") or {}
        for case, v in fwd.items():
            n = rust.get(case, {}).get("iters", "?")
            print(f"| {case} | {v['ort_ms']:.1f} | {v['native_ms']:.1f} | {v['torch_ms']:.1f} | "
                  f"{v['torch_ms'] / v['ort_ms']:.2f}x | {v['torch_ms'] / v['native_ms']:.2f}x | {n} / {v['torch_iters']} | "
                  f"{v['max_abs_diff']:.1e} |")
        print()

    rows = []
    for cfg in ("tiny", "full"):
        torch_r = load(d, f"ddim_{cfg}_torch.json")
        for mode in ("onnx_batched", "onnx_exact", "native_batched"):
            p = pipeline(d, f"ddim_{cfg}_{mode}", "diffuse")
            if p is None:
                continue
            r, proc, diffuse = p
            n = diffuse["rows_out"]
            sps = n / r["wall_seconds"]
            ratio = f"{sps / torch_r['samples_per_second']:.2f}x" if torch_r else "-"
            rows.append(f"| {cfg} | idflow {mode.replace('_', ' ')} | {n} | {r['wall_seconds']:.1f} | {proc:.1f} | {sps:.3f} | {ratio} | "
                        f"{diffuse['model_seconds']:.1f} | {r['wall_seconds'] / diffuse['model_seconds']:.4f} | "
                        f"{diffuse['busy_seconds'] / diffuse['model_seconds']:.4f} |")
        if torch_r:
            rows.append(f"| {cfg} | PyTorch loop (batch {torch_r['batch']}) | {torch_r['samples']} | {torch_r['wall_seconds']:.1f} | - | "
                        f"{torch_r['samples_per_second']:.3f} | 1 | {torch_r['model_seconds']:.1f} | {torch_r['loop_overhead']:.4f} | - |")
    if rows:
        print("## DDIM-50 sampling, 3x32x32 latents, calls of up to 16 latents\n")
        print("| UNet | side | latents | wall s | process s | samples/s | vs PyTorch | s inside UNet calls | wall / UNet | diffuse busy / UNet |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print()

    py = load(d, "embed_python.json")
    rows = []
    for mode in ("onnx", "native"):
        p = pipeline(d, f"embed_{mode}", "embed")
        if p is None:
            continue
        r, proc, embed = p
        n = embed["rows_out"]
        ips = n / r["wall_seconds"]
        ratio = f"{ips / py['images_per_second_with_session']:.2f}x" if py else "-"
        rows.append(f"| idflow {mode} | {n} | {r['wall_seconds']:.1f} | {proc:.1f} | {ips:.2f} | {ratio} | {embed['model_seconds']:.1f} | "
                    f"{r['wall_seconds'] / embed['model_seconds']:.3f} |")
    if py:
        rows.append(f"| PIL + onnxruntime | {py['images']} | {py['loop_seconds'] + py['session_seconds']:.1f} "
                    f"(session {py['session_seconds']:.1f}) | - | {py['images_per_second_with_session']:.2f} | 1 | "
                    f"{py['model_seconds']:.1f} | {(py['loop_seconds'] + py['session_seconds']) / py['model_seconds']:.3f} |")
        if "max_cosine_distance" in py:
            rows.append(f"\nLargest cosine distance between the two sides' embeddings: {py['max_cosine_distance']:.1e}.")
    if rows:
        print("## IResNet-50 embedding of 112x112 PNGs, batch 32\n")
        print("| side | images | wall s | process s | images/s | vs Python | s inside encoder calls | wall / encoder |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print()

    p = os.path.join(d, "load.txt")
    if os.path.exists(p):
        print("## Load average (1, 5, 15 min) at the start of each stage\n")
        print("```")
        print(open(p).read().rstrip())
        print("```")


if __name__ == "__main__":
    main()
