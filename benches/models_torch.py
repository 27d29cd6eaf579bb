#!/usr/bin/env python3
"""PyTorch CPU timings of the architectures idflow runs natively, on identical weights.

Usage (both sides at the same priority and thread count):
    ORT_DYLIB_PATH=$(bash tests/py/ort_env.sh) RAYON_NUM_THREADS=2 nice -n 15 \
        cargo run -p idflow-models --example bench_onnx -- --batch 8,32 --export DIR
    nice -n 15 python benches/models_torch.py DIR [--threads 2] [--iters 5] [--full-iters 2] [--json OUT]

`bench_onnx --export` writes `<model>_weights.safetensors` (parameter names = the official
state-dict keys), `<model>_b<B>_io.safetensors` (inputs and the ONNX Runtime output) and
`timings.json` (ORT and candle ms per case). The older `bench_forward --export` layout
(`<model>_io.safetensors`, one number per model in `timings.json`) is read too. This script
defines the same networks in plain PyTorch, loads those weights strictly, checks that its output
equals the Rust output, times the forward pass (median after one warm-up) and prints the ratios.
Needs: torch, safetensors, numpy.
"""
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


# ----------------------------------------------------------------------------- ConditionalUNet
class TimeEmbedding(nn.Module):
    def __init__(self, ch):
        super().__init__()
        d = ch // 4
        half = d // 2
        self.register_buffer("freq", torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half),
                             persistent=False)
        self.lin1 = nn.Linear(d, ch)
        self.lin2 = nn.Linear(ch, ch)

    def forward(self, t):
        a = t[:, None].float() * self.freq[None]
        return self.lin2(F.silu(self.lin1(torch.cat([a.cos(), a.sin()], -1))))


class AdaNorm(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = nn.GroupNorm(32, ch)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, tch):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb = nn.Sequential(nn.SiLU(), nn.Linear(tch, cout))
        self.scale_emb = nn.Linear(cout, cout)
        self.shift_emb = nn.Linear(cout, cout)
        self.norm2 = AdaNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.time_emb(temb)
        h = (1 + self.scale_emb(e)[:, :, None, None]) * self.norm2.norm(h) + self.shift_emb(e)[:, :, None, None]
        return self.conv2(F.silu(h)) + self.shortcut(x)


class MHA(nn.Module):
    def __init__(self, ch, kv, heads, hc):
        super().__init__()
        self.heads, self.hc = heads, hc
        self.to_q = nn.Conv1d(ch, heads * hc, 1)
        self.to_k = nn.Conv1d(kv, heads * hc, 1)
        self.to_v = nn.Conv1d(kv, heads * hc, 1)
        self.proj_out = nn.Conv1d(heads * hc, ch, 1)

    def forward(self, x, c=None):
        c = x if c is None else c
        b = x.shape[0]
        s = self.hc ** -0.25
        q = (self.to_q(x) * s).reshape(b * self.heads, self.hc, -1)
        k = (self.to_k(c) * s).reshape(b * self.heads, self.hc, -1)
        v = self.to_v(c).reshape(b * self.heads, self.hc, -1)
        w = torch.softmax(q.transpose(1, 2) @ k, -1)
        return self.proj_out((v @ w.transpose(1, 2)).reshape(b, self.heads * self.hc, -1))


class CrossAttn(nn.Module):
    def __init__(self, ch, cdim, heads, hc):
        super().__init__()
        inner = heads * hc
        self.cdim, self.d = cdim, hc
        self.x_proj_in = nn.Conv2d(ch, inner, 1)
        self.x_proj_out = nn.Conv2d(inner, ch, 1)
        self.self_attention = MHA(inner, inner, heads, hc)
        self.c_proj_in = nn.Linear(cdim, cdim * hc)
        self.cross_attention = MHA(inner, cdim, heads, hc)
        self.x_norm = nn.GroupNorm(32, inner)
        self.c_norm = nn.GroupNorm(32, cdim)
        self.ff = nn.Sequential(nn.Linear(inner, inner * 4), nn.GELU(), nn.Linear(inner * 4, inner))

    def forward(self, x, c):
        b, _, h, w = x.shape
        y = self.x_proj_in(x).flatten(2)
        cc = self.c_norm(self.c_proj_in(c).reshape(b, self.cdim, self.d))
        y = self.self_attention(self.x_norm(y)) + y
        y = self.cross_attention(self.x_norm(y), cc) + y
        y = self.ff(self.x_norm(y).transpose(1, 2)).transpose(1, 2) + y
        return self.x_proj_out(y.reshape(b, -1, h, w)) + x


class Block(nn.Module):
    def __init__(self, cin, cout, tch, attn, cdim, hc):
        super().__init__()
        self.res = ResBlock(cin, cout, tch)
        self.attn = CrossAttn(cout, cdim, cout // hc, hc) if attn else None

    def forward(self, x, t, c):
        x = self.res(x, t)
        return self.attn(x, c) if self.attn is not None else x


class Middle(nn.Module):
    def __init__(self, ch, tch, cdim, hc):
        super().__init__()
        self.res1 = ResBlock(ch, ch, tch)
        self.attn = CrossAttn(ch, cdim, ch // hc, hc)
        self.res2 = ResBlock(ch, ch, tch)


class Resample(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv


class UNet(nn.Module):
    """IDiff-Face ConditionalUNet, condition type CA, attention_heads = -1."""

    def __init__(self, init_ch, mults, attn, blocks, cdim, hc=32, cin=512, img=3):
        super().__init__()
        tch = init_ch * 4
        self.image_proj = nn.Conv2d(img, init_ch, 3, padding=1)
        self.time_emb = TimeEmbedding(tch)
        self.context_emb = nn.Linear(cin, cdim)
        down, ch = [], init_ch
        for i, m in enumerate(mults):
            out = ch * m
            for _ in range(blocks):
                down.append(Block(ch, out, tch, attn[i], cdim, hc))
                ch = out
            if i < len(mults) - 1:
                down.append(Resample(nn.Conv2d(ch, ch, 3, 2, 1)))
        self.down = nn.ModuleList(down)
        self.middle = Middle(ch, tch, cdim, hc)
        up = []
        for i in reversed(range(len(mults))):
            for _ in range(blocks):
                up.append(Block(ch + ch, ch, tch, attn[i], cdim, hc))
            out = ch // mults[i]
            up.append(Block(ch + out, out, tch, attn[i], cdim, hc))
            ch = out
            if i > 0:
                up.append(Resample(nn.ConvTranspose2d(ch, ch, 4, 2, 1)))
        self.up = nn.ModuleList(up)
        self.norm = nn.GroupNorm(32, init_ch)
        self.final = nn.Conv2d(ch, img, 3, padding=1)

    def forward(self, x, t, context):
        t = self.time_emb(t)
        x = self.image_proj(x)
        c = self.context_emb(context)
        skips = [x]
        for m in self.down:
            x = m.conv(x) if isinstance(m, Resample) else m(x, t, c)
            skips.append(x)
        x = self.middle.res2(self.middle.attn(self.middle.res1(x, t), c), t)
        for m in self.up:
            x = m.conv(x) if isinstance(m, Resample) else m(torch.cat([x, skips.pop()], 1), t, c)
        return self.final(F.silu(self.norm(x)))


# ----------------------------------------------------------------------------- IResNet
class IBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    def __init__(self, layers, features=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, w) in enumerate(zip(layers, [64, 128, 256, 512])):
            blocks = []
            for b in range(n):
                blocks.append(IBlock(cin, w, 2 if b == 0 else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 49, features)
        self.features = nn.BatchNorm1d(features, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.bn2(x).flatten(1)))


# ----------------------------------------------------------------------------- driver
def load_strict(model, path):
    sd = load_file(path)
    own = model.state_dict()
    for k in list(sd):
        if k.endswith("num_batches_tracked") and k not in own:
            sd.pop(k)
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    model.load_state_dict(sd, strict=True)
    return model.eval()


def median_ms(fn, iters):
    fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def arg(args, flag, default):
    return type(default)(args[args.index(flag) + 1]) if flag in args else default


MODELS = {
    "unet_tiny": lambda: UNet(32, [1, 1, 2, 1], [False, True, True, True], 2, 32),
    "unet_full": lambda: UNet(96, [1, 2, 2, 2], [False, True, True, True], 2, 256),
    "iresnet50": lambda: IResNet([3, 4, 14, 3]),
}


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        sys.exit(2)
    d = args[0]
    threads = arg(args, "--threads", 2)
    iters = arg(args, "--iters", 5)
    full_iters = arg(args, "--full-iters", 2)
    out_json = arg(args, "--json", "")
    torch.set_num_threads(threads)
    rust = json.load(open(f"{d}/timings.json"))
    print(f"torch {torch.__version__}, {threads} threads")
    results = {}
    loaded = {}
    with torch.no_grad():
        for case, entry in rust.items():
            if isinstance(entry, dict):  # bench_onnx layout
                name, idflow = entry["model"], {"ort": entry["ort_ms"], "native": entry["native_ms"]}
            else:  # bench_forward layout
                name, idflow = case, {"native": entry}
            if name not in MODELS:
                continue
            if name not in loaded:
                loaded = {name: load_strict(MODELS[name](), f"{d}/{name}_weights.safetensors")}
            model = loaded[name]
            io = load_file(f"{d}/{case}_io.safetensors")
            if name.startswith("unet"):
                run = lambda: model(io["x"], io["t"], io["context"])  # noqa: E731
                expected = io["eps"]
            else:
                run = lambda: model(io["x"])  # noqa: E731
                expected = io["features"]
            diff = (run() - expected).abs().max().item()
            rel = diff / max(expected.abs().max().item(), 1e-30)
            n = full_iters if name == "unet_full" else iters
            ms = median_ms(run, n)
            line = f"{case}: torch {ms:.1f} ms (median of {n})"
            for backend, v in idflow.items():
                line += f", idflow {backend} {v:.1f} ms (torch/{backend} {ms / v:.2f}x)"
            print(f"{line}, max |diff| {diff:.2e} (relative {rel:.1e})", flush=True)
            results[case] = {"torch_ms": ms, "torch_iters": n, **{f"{k}_ms": v for k, v in idflow.items()},
                             "max_abs_diff": diff, "relative_diff": rel}
    if out_json:
        with open(out_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
