#!/usr/bin/env bash
# The miniature reproduction of IDiff-Face's results table on the toy world, in one command
# (docs/reproduction.md):
#   1. the toy benchmarks at 32 px;
#   2. the CPD-0 ablation LDM: the committed models/toy/ldm-cpd0 (pipelines/toy/train-ldm.yaml
#      with cpd 0, otherwise identical); with TOY_CPD0_LDM set to another folder, it is trained
#      there first when that folder has no weights (about 30 more minutes);
#   3. pipelines/toy/reproduce.yaml: five training sets, five recognizers, dataset metrics;
#   4. the two tables (recognition accuracy in the seed's layout, dataset metrics).
# Everything is written under ${IDFLOW_OUT:-out}/toy; the tables go to
# ${IDFLOW_OUT:-out}/toy/reproduce/tables.md. Set IDFLOW to a built binary to skip cargo.
#   bash pipelines/toy/reproduce.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${IDFLOW_OUT:-out}"
export IDFLOW_OUT="$out"
if [ -z "${IDFLOW:-}" ]; then
  cargo build --quiet
  IDFLOW="${CARGO_TARGET_DIR:-target}/debug/idflow"
fi
# the training loops are single-threaded per node; the five train nodes run side by side
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"
export BENCH="$out/toy/benchmarks-32"
export TOY_CPD0_LDM="${TOY_CPD0_LDM:-models/toy/ldm-cpd0}"

[ -f "$BENCH/toy_calfw.bin" ] || "$IDFLOW" toy benchmarks --size 32 --out "$BENCH"
[ -f "$TOY_CPD0_LDM/ema_averaged_model.safetensors" ] || "$IDFLOW" run pipelines/toy/train-ldm.yaml \
  --set nodes.trained.cpd=0 \
  --set nodes.trained.unet=models/toy/ldm-cpd0/config.json \
  --set nodes.trained.output="$TOY_CPD0_LDM" \
  --set nodes.stats.path="$TOY_CPD0_LDM/stats"
# idflow resumes one output per pipeline, and this one writes five datasets: a rerun regenerates
# the sets (deterministic, so identical) while finished or interrupted recognizers continue from
# their checkpoints (`resume: true`) and re-emit their statistics.
rm -rf "$out"/toy/reproduce/*/dataset
"$IDFLOW" run pipelines/toy/reproduce.yaml --report "$out/toy/reproduce/run.json"
r="$out/toy/reproduce"
"$IDFLOW" table \
  --recognition "(a) real toy faces=$r/real/stats" \
  --recognition "(b) synthetic uniform, CPD 0.25=$r/uniform/stats" \
  --recognition "(c) two-stage, CPD 0.25=$r/two-stage/stats" \
  --recognition "(d) two-stage + consistency filter=$r/filtered/stats" \
  --recognition "(e) synthetic uniform, CPD 0=$r/cpd0/stats" \
  --dataset "(a) real toy faces=$r/real/metrics" \
  --dataset "(b) synthetic uniform, CPD 0.25=$r/uniform/metrics" \
  --dataset "(c) two-stage, CPD 0.25=$r/two-stage/metrics" \
  --dataset "(d) two-stage + consistency filter=$r/filtered/metrics" \
  --dataset "(e) synthetic uniform, CPD 0=$r/cpd0/metrics" \
  --out "$r/tables.md"
