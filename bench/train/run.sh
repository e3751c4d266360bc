#!/usr/bin/env bash
# Training benchmark: pipeline train's logistic regression (linfa) beside scikit-learn's
# LogisticRegression on the very same matrix, in the same run. Prints the median fit
# time and the test ROC AUC of both, then the ratios the issue asks for:
# linfa / sklearn fit time (goal < 1) and the AUC difference (goal <= 0.005).
#
#   bench/train/run.sh                              # 150,000 customers, seed 42, 7 fits each
#   TRAIN_BENCH_REPS=3 bench/train/run.sh           # fewer repetitions
#   TRAIN_BENCH_CUSTOMERS=20000 bench/train/run.sh  # a smaller dataset
#
# Steps: release build of pipeline/examples/train_bench.rs, which generates the dataset
# with the pipeline's generator, builds the matrices with pipeline::train::prepare (the
# path `pipeline train` takes), exports them to out/bench-train/*.npy and times
# pipeline::train::fit::logistic; then bench/train/sklearn_baseline.py in a venv under
# out/bench-train/venv. No network traffic except pip installing into that venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=out/bench-train
REPS=${TRAIN_BENCH_REPS:-7}
CUSTOMERS=${TRAIN_BENCH_CUSTOMERS:-150000}
mkdir -p "$OUT"

cargo build --release -q -p pipeline --example train_bench

VENV=$OUT/venv
if ! cmp -s bench/train/requirements.txt "$VENV/requirements.txt"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r bench/train/requirements.txt
  cp bench/train/requirements.txt "$VENV/requirements.txt"
fi

target/release/examples/train_bench --out "$OUT" --customers "$CUSTOMERS" --seed 42 --reps "$REPS"
"$VENV/bin/python" bench/train/sklearn_baseline.py "$OUT" "$REPS" target/release/examples/train_bench
