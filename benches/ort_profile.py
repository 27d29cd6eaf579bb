#!/usr/bin/env python3
"""Where ONNX Runtime spends a model's time: runs an ONNX file a few times with ORT's profiler
and prints the kernel time per operator type (the breakdown quoted in docs/performance.md).

Usage:
    python benches/ort_profile.py MODEL.onnx [--batch 8] [--side 32] [--threads 2] [--runs 3]

Inputs are generated from the model's signature: dynamic dimensions become `--batch` (the first)
and `--side` (the others); float inputs get standard-normal values, integer inputs 500 (a
mid-schedule timestep), `uint8` inputs zeros (no context dropout). Writes ORT's profile JSON in
the current directory. Needs: onnxruntime, numpy.
"""
import collections
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def arg(args, flag, default):
    return type(default)(args[args.index(flag) + 1]) if flag in args else default


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__)
        sys.exit(2)
    model = args[0]
    batch, side = arg(args, "--batch", 8), arg(args, "--side", 32)
    threads, runs = arg(args, "--threads", 2), arg(args, "--runs", 3)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (batch if j == 0 else side) for j, d in enumerate(i.shape)]
        if "uint8" in i.type:
            feeds[i.name] = np.zeros(shape, dtype=np.uint8)
        elif "int" in i.type:
            feeds[i.name] = np.full(shape, 500, dtype=np.int64)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        print(f"input {i.name} {i.type} {shape}")
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        print(f"run {1e3 * (time.perf_counter() - t0):.1f} ms")
    events = json.load(open(sess.end_profiling()))
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    all_us = sum(total.values())
    for op, us in total.most_common(20):
        print(f"{op:28s} {us / 1e3 / runs:10.1f} ms/run {100 * us / all_us:5.1f} %  nodes {count[op] // runs}")


if __name__ == "__main__":
    main()
