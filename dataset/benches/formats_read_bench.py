"""Python side of the formats_read benchmark: read + decode the same JPEGs with PIL.

TFRecord is read the way TFace's loader does (seek to the indexed offset, length, payload,
tf.train.Example via protobuf; CRCs are not checked), RecordIO like mxnet's read_idx + unpack,
the image folder with open().read(). Each decode is np.asarray(Image.open(..).convert('RGB')).
Work is split over the same number of threads as the Rust side (PIL releases the GIL).
Prints {"tfrecord": rows/s, "recordio": rows/s, "imagefolder": rows/s}.
"""
import io
import json
import os
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "py"))
from cross_check import Example, ir_unpack, rec_read_at  # noqa: E402


def decode(b):
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).shape


def timed(items, threads, work):
    chunks = [items[i::threads] for i in range(threads)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(work, chunks))
    return len(items) / (time.perf_counter() - t0)


def main():
    root, threads = sys.argv[1], int(sys.argv[2])
    res = {}
    tdir = os.path.join(root, "tfr")
    index = [l.rstrip("\n").split("\t") for l in open(os.path.join(tdir, "faces.index"))]

    def tfr(chunk):
        files = {}
        for _, shard, off in chunk:
            f = files.get(shard)
            if f is None:
                f = files[shard] = open(os.path.join(tdir, "faces-%05d.tfrecord" % int(shard)), "rb")
            f.seek(int(off))
            (n,) = struct.unpack("<Q", f.read(8))
            f.read(4)
            ex = Example()
            ex.ParseFromString(f.read(n))
            decode(ex.features.feature["image"].bytes_list.value[0])

    res["tfrecord"] = timed(index, threads, tfr)
    rdir = os.path.join(root, "rec")
    idx = {}
    for line in open(os.path.join(rdir, "train.idx")):
        k, o = line.split("\t")
        idx[int(k)] = int(o)
    with open(os.path.join(rdir, "train.rec"), "rb") as f:
        (_, label, _, _), _ = ir_unpack(rec_read_at(f, idx[0]))
    keys = list(range(1, int(label[0])))

    def rec(chunk):
        with open(os.path.join(rdir, "train.rec"), "rb") as f:
            for k in chunk:
                _, img = ir_unpack(rec_read_at(f, idx[k]))
                decode(img)

    res["recordio"] = timed(keys, threads, rec)
    fdir = os.path.join(root, "folder")
    paths = [os.path.join(fdir, d, x) for d in sorted(os.listdir(fdir)) for x in sorted(os.listdir(os.path.join(fdir, d)))]

    def folder(chunk):
        for p in chunk:
            with open(p, "rb") as f:
                decode(f.read())

    res["imagefolder"] = timed(paths, threads, folder)
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    main()
