#!/usr/bin/env python3
"""The Python peer of `benches/pipelines/embed.yaml`: read an image folder, decode and resize with
PIL, normalise, and run the same IResNet ONNX graph on onnxruntime, batch by batch.

Usage:
    idflow compile --model iresnet --checkpoint iresnet50_weights.safetensors --config iresnet50 --out iresnet50.onnx
    nice -n 15 python benches/embed_onnx.py FOLDER iresnet50.onnx [--batch 32] [--threads 2] \\
        [--limit-identities N] [--compare EMBEDDINGS_DIR] [--json OUT]

FOLDER is an ImageFolder tree (root/<identity>/<image>.png|jpg); `--limit-identities N` reads
the first N identity folders (sorted), like `read`'s `limit_identities`. Preprocessing is `embed`'s:
RGB, bilinear resize to 112×112 when the image has another size, (x/255 − 0.5)/0.5, NCHW
float32; embeddings are L2-normalised. The timed span covers listing the folder, reading,
decoding, inference and normalisation; creating the session is timed separately.
`--compare` reads the Parquet shards `idflow run` wrote (columns `path`, `embedding`) and
reports the largest cosine distance between the two sides' embeddings of each image.
Needs: onnxruntime, pillow, numpy (pyarrow for --compare).
"""
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

SIDE = 112


def arg(args, flag, default):
    return type(default)(args[args.index(flag) + 1]) if flag in args else default


def list_images(root, limit=None):
    out = []
    for ident in sorted(os.listdir(root))[:limit]:
        d = os.path.join(root, ident)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d))
                    if f.lower().rsplit(".", 1)[-1] in ("png", "jpg", "jpeg")]
    return out


def prepare(path):
    with open(path, "rb") as f:
        img = Image.open(f)
        img = img.convert("RGB")
    if img.size != (SIDE, SIDE):
        img = img.resize((SIDE, SIDE), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(2, 0, 1)


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0].startswith("-"):
        print(__doc__)
        sys.exit(2)
    folder, model = args[0], args[1]
    batch = arg(args, "--batch", 32)
    threads = arg(args, "--threads", 2)
    compare = arg(args, "--compare", "")
    out_json = arg(args, "--json", "")
    limit_ids = arg(args, "--limit-identities", 0) or None
    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    session_s = time.perf_counter() - t0
    name = sess.get_inputs()[0].name

    t0 = time.perf_counter()
    paths = list_images(folder, limit_ids)
    embeddings, model_s = [], 0.0
    for i in range(0, len(paths), batch):
        x = np.stack([prepare(p) for p in paths[i:i + batch]])
        t1 = time.perf_counter()
        f = sess.run(None, {name: x})[0]
        model_s += time.perf_counter() - t1
        # float64 norms: random-weight encoders give features whose squared norm overflows f32
        f = f.astype(np.float64)
        embeddings.append((f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-300)).astype(np.float32))
    emb = np.concatenate(embeddings)
    loop_s = time.perf_counter() - t0
    n = len(paths)
    result = {"images": n, "batch": batch, "threads": threads, "session_seconds": session_s,
              "loop_seconds": loop_s, "model_seconds": model_s, "images_per_second": n / loop_s,
              "images_per_second_with_session": n / (loop_s + session_s), "onnxruntime": ort.__version__}
    print(f"python PIL + onnxruntime {ort.__version__}: {n} images, batch {batch}, {threads} threads: "
          f"session {session_s:.2f} s, loop {loop_s:.2f} s ({n / loop_s:.2f} images/s), "
          f"inside session.run {model_s:.2f} s")
    if compare:
        import pyarrow.parquet as pq
        table = pq.read_table(compare, columns=["path", "embedding"])
        key = lambda p: tuple(p.replace(os.sep, "/").split("/")[-2:])  # noqa: E731 (identity, file)
        theirs = dict(zip(map(key, table.column("path").to_pylist()), table.column("embedding").to_pylist()))
        worst = 0.0
        for p, e in zip(paths, emb):
            other = theirs.get(key(p))
            if other is None:
                sys.exit(f"{p}: no embedding in {compare}")
            worst = max(worst, 1.0 - float(np.dot(e, np.asarray(other, dtype=np.float32))))
        print(f"largest cosine distance to idflow's embeddings: {worst:.2e}")
        result["max_cosine_distance"] = worst
    if out_json:
        with open(out_json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
