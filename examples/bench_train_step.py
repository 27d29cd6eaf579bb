"""PyTorch CPU counterpart of `examples/bench_train_step.rs`: the same toy IResNet
(IBasicBlock, layers [1,1,1,1], widths 16-128, 32 px, 64 features) with a CosFace head and
SGD(momentum 0.9, weight decay 5e-4), batch 32, and the same tiny denoiser shape is not
rebuilt here (IDiff-Face's UNet code is not vendored); prints ms per training step.

    python examples/bench_train_step.py [--steps N]
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
    def __init__(self, widths=(16, 32, 64, 128), size=32, features=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.prelu = nn.PReLU(widths[0])
        blocks, inplanes = [], widths[0]
        for w in widths:
            blocks.append(Block(inplanes, w, 2))
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = ToyIResNet()
    kernel = nn.Parameter(torch.randn(64, 8) * 0.01)
    opt = torch.optim.SGD(list(net.parameters()) + [kernel], lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(32, 3, 32, 32)
    y = torch.arange(32) % 8

    def step():
        cos = F.normalize(net(x)) @ F.normalize(kernel, dim=0)
        logits = 16.0 * (cos - 0.1 * F.one_hot(y, 8))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    s = (time.perf_counter() - t0) / args.steps
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}: toy IResNet batch 32: {s * 1e3:.1f} ms/step, {32 / s:.1f} images/s")


if __name__ == "__main__":
    main()
