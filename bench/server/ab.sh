#!/usr/bin/env bash
# Interleaved A/B on loopback: this server (default flags, POST /predict) and the
# hello-world ceiling, run alternately ROUNDS times for SECONDS each, so drift in what
# else the machine runs hits both alike. Prints each round's rust/hello ratio and the
# median. Needs the release binaries (bench/server/run.sh builds them) and wrk.
#
# Usage: bench/server/ab.sh [ROUNDS] [SECONDS] [CONNECTIONS] [-- extra server flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
DUR=${2:-3}
CONNS=${3:-16}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
BIN=target/release
OUT=out/bench-server
mkdir -p "$OUT"
"$BIN/examples/bench_artifact" "$OUT/models" >/dev/null
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# shellcheck source=bench/server/lib.sh disable=SC1091 # checked on its own
. bench/server/lib.sh
rps() { # port seconds
  BENCH_NAME=x wrk -t 2 -c "$CONNS" -d "${2}s" --latency -s bench/server/post.lua \
    "http://127.0.0.1:$1/predict" | grep '^{' | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])'
}
R=$(port); "$BIN/server" --model "$OUT/models" --listen "127.0.0.1:$R" --log-format text "${EXTRA[@]}" 2>"$OUT/ab-server.log" & PIDS+=($!)
H=$(port); "$BIN/examples/hello" "127.0.0.1:$H" & PIDS+=($!)
wait_port "$R"; wait_port "$H"
rps "$R" 1 >/dev/null; rps "$H" 1 >/dev/null
RATIOS=()
for i in $(seq 1 "$ROUNDS"); do
  a=$(rps "$R" "$DUR"); b=$(rps "$H" "$DUR")
  r=$(python3 -c "print(f'{100*$a/$b:.0f}')")
  RATIOS+=("$r")
  printf 'round %d: rust %8.0f  hello %8.0f  rust/hello %s%%\n' "$i" "$a" "$b" "$r"
done
printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{a[NR]=$1} END {print "median rust/hello: " a[int((NR+1)/2)] "%"}'
