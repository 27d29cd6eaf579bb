"""Independent Python readers/writers for idflow's face-data formats (cross-check).

Usage: cross_check.py DIR
  Reads what the Rust writers left in DIR/rust and prints a JSON summary on stdout; writes
  Python-made files into DIR/py plus DIR/py/manifest.json for the Rust readers to check.
Formats: TFRecord (framing + CRC-32C written here, tf.train.Example via protobuf with a
descriptor built at run time, no TensorFlow), verification .bin (pickle, as insightface loads
it), .npy (numpy), MXNet RecordIO (a small reader/writer of the published dmlc format, since
mxnet does not install).
"""
import hashlib
import json
import os
import pickle
import struct
import sys

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# ---------------------------------------------------------------- CRC-32C and TFRecord framing
_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_read(path):
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked(data[pos:pos + 8]), "length crc"
        payload = data[pos + 12:pos + 12 + n]
        assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == masked(payload), "payload crc"
        out.append((pos, payload))
        pos += n + 16
    return out


def tfrecord_frame(payload):
    n = struct.pack("<Q", len(payload))
    return n + struct.pack("<I", masked(n)) + payload + struct.pack("<I", masked(payload))


# ---------------------------------------------------------------- tf.train.Example via protobuf
def example_class():
    fd = descriptor_pb2.FileDescriptorProto(name="example_xcheck.proto", package="tensorflow", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    for name, typ in (("BytesList", T.TYPE_BYTES), ("FloatList", T.TYPE_FLOAT), ("Int64List", T.TYPE_INT64)):
        m = fd.message_type.add(name=name)
        m.field.add(name="value", number=1, type=typ, label=T.LABEL_REPEATED)
    feat = fd.message_type.add(name="Feature")
    feat.oneof_decl.add(name="kind")
    for i, (fname, tname) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List"))):
        feat.field.add(name=fname, number=i + 1, type=T.TYPE_MESSAGE, type_name=".tensorflow." + tname,
                       label=T.LABEL_OPTIONAL, oneof_index=0)
    feats = fd.message_type.add(name="Features")
    entry = feats.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, type_name=".tensorflow.Feature", label=T.LABEL_OPTIONAL)
    feats.field.add(name="feature", number=1, type=T.TYPE_MESSAGE, type_name=".tensorflow.Features.FeatureEntry",
                    label=T.LABEL_REPEATED)
    ex = fd.message_type.add(name="Example")
    ex.field.add(name="features", number=1, type=T.TYPE_MESSAGE, type_name=".tensorflow.Features", label=T.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = example_class()

# ---------------------------------------------------------------- MXNet RecordIO (dmlc format)
MAGIC = 0xCED7230A
IR = "IfQQ"


def rec_read_at(f, off):
    f.seek(off)
    out = b""
    while True:
        magic, word = struct.unpack("<II", f.read(8))
        assert magic == MAGIC, "bad magic at %d" % off
        cflag, n = word >> 29, word & ((1 << 29) - 1)
        out += f.read((n + 3) & ~3)[:n]
        if cflag in (0, 3):
            return out
        out += struct.pack("<I", MAGIC)


def ir_unpack(s):
    flag, label, id1, id2 = struct.unpack(IR, s[:24])
    s = s[24:]
    if flag > 0:
        label = list(np.frombuffer(s, np.float32, flag))
        s = s[flag * 4:]
    return (flag, label, id1, id2), s


def ir_pack(flag_label, id1, payload):
    if isinstance(flag_label, (list, tuple)):
        head = struct.pack(IR, len(flag_label), 0.0, id1, 0) + np.asarray(flag_label, np.float32).tobytes()
    else:
        head = struct.pack(IR, 0, float(flag_label), id1, 0)
    return head + payload


def rec_frame(buf):
    m = struct.pack("<I", MAGIC)
    out, dptr = b"", 0
    for i in range(0, len(buf) & ~3, 4):
        if buf[i:i + 4] == m:
            out += m + struct.pack("<I", ((1 if dptr == 0 else 2) << 29) | (i - dptr)) + buf[dptr:i]
            dptr = i + 4
    out += m + struct.pack("<I", ((3 if dptr else 0) << 29) | (len(buf) - dptr)) + buf[dptr:]
    return out + b"\0" * ((4 - len(buf) % 4) % 4)


def mxface_read(d):
    """What arcface_torch's MXFaceDataset sees: (label, image sha256) per image index."""
    idx = {}
    for line in open(os.path.join(d, "train.idx")):
        k, o = line.strip().split("\t")
        idx[int(k)] = int(o)
    with open(os.path.join(d, "train.rec"), "rb") as f:
        (flag, label, _, _), _ = ir_unpack(rec_read_at(f, idx[0]))
        assert flag > 0
        out = []
        for i in range(1, int(label[0])):
            (fl, lab, _, _), img = ir_unpack(rec_read_at(f, idx[i]))
            out.append([int(lab if fl == 0 else lab[0]), sha(img)])
        ids = []
        for i in range(int(label[0]), int(label[1])):
            (_, lab, _, _), _ = ir_unpack(rec_read_at(f, idx[i]))
            ids.append([int(lab[0]), int(lab[1])])
    prop = open(os.path.join(d, "property")).read().strip()
    return {"images": out, "identities": ids, "property": prop}


def sha(b):
    return hashlib.sha256(bytes(b)).hexdigest()


def fake_images(n):
    rng = np.random.default_rng(7)
    imgs = []
    for i in range(n):
        b = bytes([0xFF, 0xD8]) + rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
        if i % 3 == 0:
            b = b[:4] + struct.pack("<I", MAGIC) + b[4:]
        imgs.append(b)
    return imgs


def main():
    d = sys.argv[1]
    rust, py = os.path.join(d, "rust"), os.path.join(d, "py")
    summary = {}
    # --- read what Rust wrote
    recs = []
    for name in sorted(os.listdir(rust)):
        if name.endswith(".tfrecord"):
            for off, payload in tfrecord_read(os.path.join(rust, name)):
                ex = Example()
                ex.ParseFromString(payload)
                feat = ex.features.feature
                recs.append([name, off, sha(feat["image"].bytes_list.value[0]), int(feat["label"].int64_list.value[0])])
    summary["tfrecord"] = recs
    summary["tfrecord_index"] = [l.rstrip("\n").split("\t") for l in open(os.path.join(rust, "faces.index"))]
    with open(os.path.join(rust, "pairs.bin"), "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    with open(os.path.join(rust, "pairs.bin"), "rb") as f:
        bins2, _ = pickle.load(f)  # default encoding must give bytes too
    assert all(isinstance(b, bytes) for b in bins) and bins == bins2
    summary["bin"] = {"images": [sha(b) for b in bins], "issame": [bool(x) for x in issame]}
    arr = np.load(os.path.join(rust, "contexts.npy"))
    summary["npy"] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha": sha(arr.astype("<f4").tobytes())}
    summary["recordio"] = mxface_read(os.path.join(rust, "rec"))
    # --- write Python-made files for Rust to read
    os.makedirs(os.path.join(py, "rec"), exist_ok=True)
    imgs = fake_images(12)
    labels = [i // 3 for i in range(12)]
    with open(os.path.join(py, "py-00000.tfrecord"), "wb") as f:
        for img, lab in zip(imgs, labels):
            ex = Example()
            ex.features.feature["image"].bytes_list.value.append(img)
            ex.features.feature["label"].int64_list.value.append(lab)
            ex.features.feature["extra"].float_list.value.extend([0.5, 1.5])
            f.write(tfrecord_frame(ex.SerializeToString()))
    for proto in (2, 4, 5):
        with open(os.path.join(py, "pairs_p%d.bin" % proto), "wb") as f:
            pickle.dump((imgs, [i % 2 == 0 for i in range(6)]), f, protocol=proto)
    ctx = np.arange(4 * 8, dtype=np.float32).reshape(4, 8) * 0.25 + 1.0
    np.save(os.path.join(py, "ctx.npy"), ctx)
    with open(os.path.join(py, "rec", "train.rec"), "wb") as f, open(os.path.join(py, "rec", "train.idx"), "w") as fi:
        def put(key, payload):
            fi.write("%d\t%d\n" % (key, f.tell()))
            f.write(rec_frame(payload))
        n, ids = len(imgs), 4
        put(0, ir_pack([n + 1, n + 1 + ids], 0, b""))
        for i, (img, lab) in enumerate(zip(imgs, labels)):
            put(i + 1, ir_pack(lab, i + 1, img))
        for k in range(ids):
            put(n + 1 + k, ir_pack([1 + 3 * k, 4 + 3 * k], n + 1 + k, b""))
    open(os.path.join(py, "rec", "property"), "w").write("%d,112,112" % ids)
    manifest = {
        "images": [sha(b) for b in imgs],
        "labels": labels,
        "issame": [i % 2 == 0 for i in range(6)],
        "ctx_normalized": (ctx / np.linalg.norm(ctx, axis=1)[:, None]).astype("<f4").tobytes().hex(),
    }
    json.dump(manifest, open(os.path.join(py, "manifest.json"), "w"))
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
