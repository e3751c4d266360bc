#!/usr/bin/env bash
# Every benchmark, one after the other, each measuring its baseline in the same run,
# then the ratios together in one table (also written to out/bench/summary.txt):
#
#   etl     the pipeline's load of the full generated dataset vs psql \copy (floor)
#   train   pipeline train's logistic fit vs scikit-learn's LogisticRegression
#   server  this server vs Flask (dev server, gunicorn) and a hello-world hyper server
#   plan    a no-op deployer plan's requests and time vs the per-resource refresh
#   nlb     throughput through the balancer stand-in, 1, 2 and 3 instances per colour
#
# Usage: bench/run.sh [etl] [train] [server] [plan] [nlb]     (default: all five)
# Installs what it needs first (tools/bootstrap.sh: PostgreSQL, the emulator venv; the
# train and server benchmarks make their own Python venvs under out/, and the server
# benchmark installs Debian's wrk when it is missing). Everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/bench
mkdir -p "$OUT"
WHICH=("$@")
[ ${#WHICH[@]} -eq 0 ] && WHICH=(etl train server plan nlb)

bash tools/bootstrap.sh

machine() {
  echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "cpu:     $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel:  $(uname -sr)"
  echo "rustc:   $(rustc --version)"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, at the start)"
}

MACHINE=$(machine)
for b in "${WHICH[@]}"; do
  case "$b" in
    etl | train | server | plan | nlb) ;;
    *) echo "unknown benchmark '$b' (etl, train, server, plan, nlb)" >&2; exit 2 ;;
  esac
  echo "==> bench/$b/run.sh"
  bash "bench/$b/run.sh" 2>&1 | tee "$OUT/$b.log"
done

{
  echo "machine"
  printf "  %s\n" "${MACHINE//$'\n'/$'\n  '}"
  echo
  echo "ratios (each against its baseline measured in the same run)"
  for b in "${WHICH[@]}"; do
    case "$b" in
      etl) grep -E '^median of' "$OUT/etl.log" | sed 's/^/  etl:    /' ;;
      train) grep -E '^(linfa / sklearn fit time|AUC difference)' "$OUT/train.log" | sed 's/^/  train:  /' ;;
      server) grep -E '^rust / (flask-dev|gunicorn|hello) ' "$OUT/server.log" | sed 's/^/  server: /' ;;
      plan) grep -E '^median of' "$OUT/plan.log" | sed 's/^/  plan:   /' ;;
      nlb) grep -E '^median of' "$OUT/nlb.log" | sed 's/^/  nlb:    /' ;;
    esac
  done
} | tee "$OUT/summary.txt"
