#!/usr/bin/env bash
# Reproduces the figures of docs/performance.md, each against a peer run in the same session on
# the same weights and thread count, everything at `nice -n 15`:
#   1. UNet forwards (tiny fixture config and the full 216 M-parameter IDiff-Face config, batch 8
#      and 32, 3x32x32): ONNX Runtime and candle (models/examples/bench_onnx.rs) vs PyTorch
#      (benches/models_torch.py).
#   2. DDIM-50 sampling: `idflow run benches/pipelines/ddim.yaml` (backend onnx, batched and exact;
#      native for reference) vs a PyTorch loop (benches/sample_torch.py).
#   3. IResNet-50 embedding of 1,000 112x112 PNGs: `idflow run benches/pipelines/embed.yaml`
#      (backend onnx; native on a subset for reference) vs PIL + onnxruntime (benches/embed_onnx.py).
#
# Usage:
#   python3 -m venv /tmp/torch-venv
#   /tmp/torch-venv/bin/pip install torch safetensors numpy pillow onnxruntime==1.32.0 pyarrow
#   PYTHON=/tmp/torch-venv/bin/python bash benches/run_all.sh [OUT_DIR]    # default /tmp/idflow-bench
#
# Both sides load the ONNX Runtime library of $PYTHON's onnxruntime wheel. PyTorch, candle
# (RAYON_NUM_THREADS) and the Python onnxruntime session use THREADS threads; the pipelines'
# ONNX Runtime sessions use the library's default (one thread per physical core), so run this on
# a machine (or under `taskset`) with THREADS cores. Knobs (environment, defaults in brackets):
#   THREADS [2]         threads per side
#   TINY_SAMPLES [64]   latents of the tiny-UNet DDIM runs (onnx batched / exact, PyTorch)
#   TINY_EXACT, TINY_TORCH [TINY_SAMPLES]  latents of the exact-mode and PyTorch tiny runs
#   TINY_NATIVE [16]    latents of the tiny-UNet DDIM run on the native backend
#   FULL_SAMPLES [4]    latents of the full-UNet DDIM runs (onnx, PyTorch)
#   EMBED_IDS [50]      identities (x 20 images) embedded by idflow onnx and the Python loop
#   NATIVE_IDS [3]      identities (x 20 images) embedded on the native backend
#   FULL_BATCH [8,32]   batch sizes of the full-UNet forwards
#   FORWARD_ITERS [5], FULL_ITERS [1]   timed forwards per case (tiny, full), after one warm-up
#   SKIP="forward ddim ddim-full ddim-check embed"   stages to leave out (ddim-full: the
#                       full-UNet DDIM runs; ddim-check: sample_torch.py's check against idflow)
#   CARGO_PROFILE [dev]  cargo profile of the Rust binaries (dev optimises dependencies and the
#                        model crates at opt-level 2; `release` needs a full extra build)
# Results: OUT_DIR/*.json, OUT_DIR/*.log, OUT_DIR/load.txt (load average around each stage) and
# OUT_DIR/summary.md (benches/summarize.py).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-/tmp/idflow-bench}" && cd "${1:-/tmp/idflow-bench}" && pwd)"
py="${PYTHON:-python3}"
threads="${THREADS:-2}"
skip="${SKIP:-}"
profile="${CARGO_PROFILE:-dev}"
nice="nice -n 15"
cd "$root"

export RAYON_NUM_THREADS="$threads"
ORT_DYLIB_PATH="$("$py" -c 'import onnxruntime, pathlib; print(sorted((pathlib.Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*"))[0])')"
export ORT_DYLIB_PATH
target="${CARGO_TARGET_DIR:-$root/target}"
bindir="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
# one invocation, so both binaries share one feature resolution (no rebuild of the model crate)
$nice cargo build --profile "$profile" -p idflow --bin idflow -p idflow-models --example bench_onnx
idflow="$bindir/idflow"

stage() { echo "$(date +%T) $1: load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"; }
skipped() { [[ " $skip " == *" $1 "* ]]; }
# run_pipeline NAME YAML [idflow args...]: one `idflow run` with a report and the outer wall time.
run_pipeline() {
  local name="$1" yaml="$2"
  shift 2
  rm -rf "$BENCH_OUT/latents" "$BENCH_OUT/embeddings"
  local t0 t1
  t0=$(date +%s.%N)
  $nice "$idflow" run "$yaml" -q --report "$out/$name.report.json" "$@"
  t1=$(date +%s.%N)
  "$py" -c "import json, sys; json.dump({\"process_seconds\": $t1 - $t0}, sys.stdout)" > "$out/$name.process.json"
  echo "$name: $(cut -c1-400 < "$out/$name.report.json" | tr -d '\n' | head -c 400)..."
}

: > "$out/load.txt"
stage start
models="$out/models"
if ! skipped forward || [ ! -f "$models/unet_tiny_weights.safetensors" ]; then
  stage "forward (ORT, candle)"
  $nice "$bindir/examples/bench_onnx" --batch 8,32 --full-batch "${FULL_BATCH:-8,32}" --iters "${FORWARD_ITERS:-5}" --full-iters "${FULL_ITERS:-1}" \
    --threads "$threads" --export "$models" | tee "$out/forward_rust.log"
  sync  # the exported weights (~1 GB) are on disk before the next side is timed
  if ! skipped forward; then
    stage "forward (PyTorch)"
    $nice "$py" benches/models_torch.py "$models" --threads "$threads" --iters "${FORWARD_ITERS:-5}" \
      --full-iters "${FULL_ITERS:-1}" --json "$out/forward_torch.json" | tee "$out/forward_torch.log"
  fi
fi

export BENCH_OUT="$out/work"
mkdir -p "$BENCH_OUT"
if ! skipped ddim; then
  per() { echo "--set nodes.ids.count=$(( ($1 + 15) / 16 )) --set nodes.latents.samples_per_identity=$(( $1 < 16 ? $1 : 16 ))"; }
  tiny_n="${TINY_SAMPLES:-64}"
  exact_n="${TINY_EXACT:-$tiny_n}"
  torch_n="${TINY_TORCH:-$tiny_n}"
  native_n="${TINY_NATIVE:-16}"
  export BENCH_UNET="$models/unet_tiny_weights.safetensors" BENCH_UNET_CONFIG=reference-tiny
  stage "ddim tiny onnx batched"
  # shellcheck disable=SC2046
  run_pipeline ddim_tiny_onnx_batched benches/pipelines/ddim.yaml $(per "$tiny_n")
  stage "ddim tiny onnx exact"
  # shellcheck disable=SC2046
  run_pipeline ddim_tiny_onnx_exact benches/pipelines/ddim.yaml $(per "$exact_n") --set nodes.latents.reproducible=exact
  stage "ddim tiny native batched"
  # shellcheck disable=SC2046
  run_pipeline ddim_tiny_native_batched benches/pipelines/ddim.yaml $(per "$native_n") --set nodes.latents.backend=native
  stage "ddim tiny torch"
  check=(--check "$models/ddim_tiny_io.safetensors")
  if skipped ddim-check; then check=(); fi
  $nice "$py" benches/sample_torch.py "$BENCH_UNET" --config tiny --samples "$torch_n" --batch 16 --threads "$threads" \
    "${check[@]}" --json "$out/ddim_tiny_torch.json" | tee "$out/ddim_tiny_torch.log"
fi
if ! skipped ddim && ! skipped ddim-full; then
  full_n="${FULL_SAMPLES:-4}"
  export BENCH_UNET="$models/unet_full_weights.safetensors" BENCH_UNET_CONFIG=idiff-face-ca
  stage "ddim full onnx batched"
  # shellcheck disable=SC2046
  run_pipeline ddim_full_onnx_batched benches/pipelines/ddim.yaml $(per "$full_n")
  stage "ddim full torch"
  $nice "$py" benches/sample_torch.py "$BENCH_UNET" --config full --samples "$full_n" --batch 16 --threads "$threads" \
    --json "$out/ddim_full_torch.json" | tee "$out/ddim_full_torch.log"
fi

if ! skipped embed; then
  export BENCH_IRESNET="$models/iresnet50_weights.safetensors"
  stage "embed: toy faces"
  rm -rf "$BENCH_OUT/faces"
  $nice "$idflow" run benches/pipelines/faces.yaml -q
  $nice "$idflow" compile --model iresnet --checkpoint "$BENCH_IRESNET" --config iresnet50 --out "$BENCH_OUT/iresnet50.onnx"
  stage "embed onnx"
  run_pipeline embed_onnx benches/pipelines/embed.yaml --set "nodes.faces.limit_identities=${EMBED_IDS:-50}"
  stage "embed python"
  $nice "$py" benches/embed_onnx.py "$BENCH_OUT/faces" "$BENCH_OUT/iresnet50.onnx" --batch 32 --threads "$threads" \
    --limit-identities "${EMBED_IDS:-50}" \
    --compare "$BENCH_OUT/embeddings" --json "$out/embed_python.json" | tee "$out/embed_python.log"
  stage "embed native (subset)"
  run_pipeline embed_native benches/pipelines/embed.yaml --set nodes.embeddings.backend=native \
    --set "nodes.faces.limit_identities=${NATIVE_IDS:-3}"
fi
stage end
"$py" benches/summarize.py "$out" | tee "$out/summary.md"
