#!/usr/bin/env bash
# Data-parallel replicas of the face-recognition `train` node: the toy encoder recipe with
# `replicas: 1` and `replicas: N` (default 2), same binary, run alternately; busy seconds of the
# `train` node, images per second and the ratio. One kernel thread per replica
# (RAYON_NUM_THREADS=1), so N replicas use N cores.
#   bash benches/train_replicas.sh [IDFLOW] [REPLICAS] [REPEATS]
# Workload: 256 identities x 20 images at 32 px, one epoch = 80 steps of 64, no evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/idflow}
replicas=${2:-2}
repeats=${3:-1}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash tests/py/ort_env.sh)}
export RAYON_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
images=$((256 * 20))

train_seconds() { # replicas -> busy seconds of the train node
    rm -rf "$work/out"
    "$bin" run pipelines/toy/train-encoder.yaml --set nodes.faces.identities=256 --set nodes.faces.images_per_identity=20 \
        --set nodes.trained.epochs=1 --set 'nodes.trained.eval=[]' --set nodes.trained.replicas="$1" \
        --set nodes.trained.output="$work/out/model" --set nodes.stats.path="$work/out/stats" \
        --report "$work/report.json" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(next(n["busy_seconds"] for n in r["operators"] if n["node"]=="trained"))' "$work/report.json"
}

echo "| replicas | train busy s | images/s | speed-up |"
echo "|---:|---:|---:|---:|"
for _ in $(seq "$repeats"); do
    one=$(train_seconds 1)
    many=$(train_seconds "$replicas")
    python3 - "$one" "$many" "$replicas" "$images" <<'PY'
import sys
one, many, n, images = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
print(f"| 1 | {one:.1f} | {images / one:.1f} | 1.00× |")
print(f"| {n} | {many:.1f} | {images / many:.1f} | {one / many:.2f}× |")
PY
done
