#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 60) and prints libFuzzer's exec counts.
# Needs rustup: installs a nightly toolchain and cargo-fuzz on first use when they are missing.
# Seed corpora come from the reference fixtures in the repository (tests/fixtures/reference) and
# small valid files made here (python3). The stable test suite replays the same entry points
# (fuzz/src/lib.rs) on these seeds and their mutations: dataset/tests/formats_fuzz_smoke.rs.
set -euo pipefail
SECONDS_PER_TARGET="${1:-60}"
HERE="$(cd "$(dirname "$0")" && pwd)"
REF="$HERE/../tests/fixtures/reference"
cd "$HERE"

die() {
  echo "fuzz/run.sh: $*" >&2
  exit 2
}
[ -f "$REF/README.md" ] || die "the reference fixtures are missing at $REF (they are part of the repository: git checkout -- tests/fixtures/reference)"
command -v python3 >/dev/null || die "python3 is needed to write the tfrecord and recordio seeds"
command -v rustup >/dev/null || die "rustup is needed to install the nightly toolchain cargo-fuzz builds with (https://rustup.rs)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (rustup toolchain install nightly --profile minimal)" >&2
  rustup toolchain install nightly --profile minimal >&2 || die "cannot install the nightly toolchain"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked >&2 || die "cannot install cargo-fuzz"
fi

mkdir -p corpus/tfrecord corpus/recordio corpus/verification_bin corpus/contexts corpus/torch_zip
cp "$REF/tiny_verification_py2.bin" "$REF/tiny_verification.bin" corpus/verification_bin/
cp "$REF/contexts_dict.npy" "$REF/contexts_dict_numpy2.npy" "$REF/contexts_plain.npy" corpus/contexts/
cp "$REF/contexts_dict.npy" "$REF/vq_tiny_first_stage_encoder_state_dict.pt" corpus/torch_zip/

python3 - <<'PY'
import struct
POLY = 0x82F63B78
T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    T.append(c)
def crc(b):
    c = 0xFFFFFFFF
    for x in b:
        c = T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
def masked(b):
    c = crc(b)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
def ld(field, payload):  # protobuf length-delimited field
    n, v = len(payload), b""
    while True:
        byte = n & 0x7F
        n >>= 7
        v += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([(field << 3) | 2]) + v + payload
def example(img, label):
    feats = ld(1, ld(1, b"image") + ld(2, ld(1, ld(1, img))))
    feats += ld(1, ld(1, b"label") + ld(2, ld(3, b"\x0a\x01" + bytes([label]))))
    return ld(1, feats)
with open("corpus/tfrecord/seed.tfrecord", "wb") as f:
    for i in range(3):
        p = example(bytes([0xFF, 0xD8, i]) * 5, i)
        n = struct.pack("<Q", len(p))
        f.write(n + struct.pack("<I", masked(n)) + p + struct.pack("<I", masked(p)))
M = 0xCED7230A
def rec(buf):
    return struct.pack("<II", M, len(buf)) + buf + b"\0" * ((4 - len(buf) % 4) % 4)
with open("corpus/recordio/seed.rec", "wb") as f:
    f.write(rec(struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<ff", 2, 3)))
    f.write(rec(struct.pack("<IfQQ", 0, 0.0, 1, 0) + b"\xff\xd8jpeg"))
    f.write(rec(struct.pack("<IfQQ", 2, 0.0, 2, 0) + struct.pack("<ff", 1, 2)))
    f.write(struct.pack("<II", M, (1 << 29) | 4) + b"abcd" + struct.pack("<II", M, (3 << 29) | 2) + b"ef\0\0")
PY

mkdir -p logs
failed=0
for target in tfrecord recordio verification_bin contexts torch_zip; do
  echo "=== $target (${SECONDS_PER_TARGET}s)"
  set +e
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 \
    >"logs/$target.log" 2>&1
  status=$?
  set -e
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|SUMMARY" "logs/$target.log" || true
  if [ "$status" -ne 0 ]; then
    echo "FAILED: $target (exit $status, see fuzz/logs/$target.log and fuzz/artifacts/$target)"
    failed=1
  fi
done
exit "$failed"
