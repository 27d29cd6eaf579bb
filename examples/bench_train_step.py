"""PyTorch CPU counterpart of `examples/bench_train_step.rs`: the same toy IResNet
(IBasicBlock, layers [1,1,1,1], widths 16-128, 32 px, 64 features, batch 32) and, with
`--r50`, the published IResNet-50 (112 px, 512 features, batch 8), each with a CosFace head
and SGD(momentum 0.9, weight decay 5e-4); prints ms per training step. The tiny denoiser is
not rebuilt here (IDiff-Face's UNet code is not vendored).

    python examples/bench_train_step.py [--steps N] [--r50]
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class ToyIResNet(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), size=32, features=64, layers=(1, 1, 1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.prelu = nn.PReLU(widths[0])
        blocks, inplanes = [], widths[0]
        for w, n in zip(widths, layers):
            for b in range(n):
                blocks.append(Block(inplanes, w, 2 if b == 0 else 1))
                inplanes = w
        self.body = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm2d(inplanes)
        side = size
        for _ in range(4):
            side = math.ceil(side / 2)
        self.fc = nn.Linear(inplanes * side * side, features)
        self.features = nn.BatchNorm1d(features)

    def forward(self, x):
        h = self.body(self.prelu(self.bn1(self.conv1(x))))
        return self.features(self.fc(self.bn2(h).flatten(1)))


def bench(name, net, features, size, batch, steps):
    kernel = nn.Parameter(torch.randn(features, 8) * 0.01)
    opt = torch.optim.SGD(list(net.parameters()) + [kernel], lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 8

    def step():
        cos = F.normalize(net(x)) @ F.normalize(kernel, dim=0)
        logits = 16.0 * (cos - 0.1 * F.one_hot(y, 8))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    s = (time.perf_counter() - t0) / steps
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}: {name} batch {batch}: {s * 1e3:.1f} ms/step, {batch / s:.1f} images/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--r50", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    bench("toy IResNet [1,1,1,1] w16-128 32px", ToyIResNet(), 64, 32, 32, args.steps)
    if args.r50:
        r50 = ToyIResNet(widths=(64, 128, 256, 512), size=112, features=512, layers=(3, 4, 14, 3))
        bench("IResNet-50 112px", r50, 512, 112, 8, min(args.steps, 2))


if __name__ == "__main__":
    main()
