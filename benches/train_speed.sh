#!/usr/bin/env bash
# Training speed of two idflow binaries on the toy training pipelines, run alternately on the
# same machine (wall seconds of the `train` node and the ratio).
#   bash benches/train_speed.sh BASELINE_IDFLOW CANDIDATE_IDFLOW [REPEATS]
# Workloads: the toy encoder recipe (256 identities x 20 images, one epoch = 80 steps, no
# benchmark evaluation) and the toy LDM recipe (100 identities x 16 images, one epoch = 50 steps).
set -euo pipefail
base=${1:?baseline idflow binary}
cand=${2:?candidate idflow binary}
repeats=${3:-1}
cd "$(dirname "$0")/.."
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash tests/py/ort_env.sh)}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

train_seconds() { # binary, pipeline, overrides... -> busy seconds of the train node
    local bin=$1 pipeline=$2
    shift 2
    rm -rf "$work/out"
    "$bin" run "$pipeline" --set nodes.trained.output="$work/out/model" --set nodes.stats.path="$work/out/stats" \
        --report "$work/report.json" "$@" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(next(n["busy_seconds"] for n in r["operators"] if n["node"]=="trained"))' "$work/report.json"
}

encoder=(pipelines/toy/train-encoder.yaml --set nodes.faces.identities=256 --set nodes.faces.images_per_identity=20
    --set nodes.trained.epochs=1 --set 'nodes.trained.eval=[]' --set nodes.trained.replicas=1)
ldm=(pipelines/toy/train-ldm.yaml --set nodes.faces.identities=100 --set nodes.trained.epochs=1)

echo "| workload | baseline s | candidate s | speed-up |"
echo "|---|---:|---:|---:|"
for name in encoder ldm; do
    declare -n args=$name
    for _ in $(seq "$repeats"); do
        b=$(train_seconds "$base" "${args[@]}")
        c=$(train_seconds "$cand" "${args[@]}")
        python3 -c 'import sys; n,b,c=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]); print(f"| {n} | {b:.1f} | {c:.1f} | {b/c:.2f}x |")' "$name" "$b" "$c"
    done
done
