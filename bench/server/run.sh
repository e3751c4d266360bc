#!/usr/bin/env bash
# Load benchmark on loopback with wrk, one run, one table: throughput and p50/p99 latency of
#   rust        this server (release build, default flags), POST /predict
#   rust-nohdr  the same with --header-timeout 0 (no slow-header timer per request)
#   hello       a hello-world hyper server (the ceiling)
#   hello-body  the same, but reading the request body first (like-for-like for a POST)
#   flask-dev   the original stack: Flask's development server, same model parameters
#   gunicorn    Flask under gunicorn with 2 sync workers (the machine's 2 cores)
# then the ratios the issue asks for: rust / flask-dev (goal >= 20x) and
# rust / hello (goal >= 60%).
#
# Usage: bench/server/run.sh [DURATION_SECONDS] [CONNECTIONS] [WRK_THREADS]
# Everything listens on 127.0.0.1; all processes started here are stopped on exit.
# wrk comes from Debian's package (installed here with apt-get when missing, as root);
# bench/server/post.lua sets the POST body and prints one JSON line per target.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10}
CONNS=${2:-16}
THREADS=${3:-2}
OUT=out/bench-server
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
  else
    echo "wrk is missing: apt-get install wrk (as root)" >&2; exit 1
  fi
fi

cargo build --release -q -p server --bin server --example hello --example bench_artifact
BIN=target/release

VENV=$OUT/venv
if [ ! -x "$VENV/bin/gunicorn" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r bench/server/requirements.txt
fi

MODELS=$OUT/models
"$BIN/examples/bench_artifact" "$MODELS" >/dev/null

# shellcheck source=bench/server/lib.sh disable=SC1091 # checked on its own
. bench/server/lib.sh
load() { # name port duration
  BENCH_NAME=$1 wrk -t "$THREADS" -c "$CONNS" -d "${3}s" --latency -s bench/server/post.lua \
    "http://127.0.0.1:$2/predict" > "$OUT/wrk-$1.txt"
}
run() { # name port
  wait_port "$2"
  load "$1" "$2" 1 # warm-up
  load "$1" "$2" "$DUR"
  grep '^{' "$OUT/wrk-$1.txt" | tail -1 | tee -a "$OUT/results.jsonl"
}
stop_last() { kill "${PIDS[-1]}" 2>/dev/null || true; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'; }
: > "$OUT/results.jsonl"

P=$(port); "$BIN/server" --model "$MODELS" --listen "127.0.0.1:$P" --log-format text >"$OUT/server.log" 2>&1 & PIDS+=($!)
run rust "$P"; stop_last
P=$(port); "$BIN/server" --model "$MODELS" --listen "127.0.0.1:$P" --header-timeout 0 --log-format text >>"$OUT/server.log" 2>&1 & PIDS+=($!)
run rust-nohdr "$P"; stop_last
P=$(port); "$BIN/examples/hello" "127.0.0.1:$P" & PIDS+=($!)
run hello "$P"; stop_last
P=$(port); "$BIN/examples/hello" "127.0.0.1:$P" read-body & PIDS+=($!)
run hello-body "$P"; stop_last
P=$(port); "$VENV/bin/python" bench/server/flask_app.py "$MODELS" "$P" >"$OUT/flask.log" 2>&1 & PIDS+=($!)
run flask-dev "$P"; stop_last
P=$(port); (cd bench/server && MODEL_ROOT="../../$MODELS" exec "../../$VENV/bin/gunicorn" -w 2 -b "127.0.0.1:$P" flask_app:app) >"$OUT/gunicorn.log" 2>&1 & PIDS+=($!)
run gunicorn "$P"; stop_last

python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = {r["name"]: r for r in map(json.loads, open(sys.argv[1]))}
print(f'\n{"target":<11} {"req/s":>10} {"p50 ms":>8} {"p99 ms":>8} {"errors":>7}')
for n in ["rust", "rust-nohdr", "hello", "hello-body", "flask-dev", "gunicorn"]:
    r = rows[n]
    print(f'{n:<11} {r["rps"]:>10.0f} {r["p50_ms"]:>8.2f} {r["p99_ms"]:>8.2f} {r["errors"]:>7}')
rust = rows["rust"]["rps"]
print(f'\nrust / flask-dev  = {rust / rows["flask-dev"]["rps"]:.1f}x   (goal >= 20x)')
print(f'rust / gunicorn   = {rust / rows["gunicorn"]["rps"]:.1f}x')
print(f'rust / hello      = {100 * rust / rows["hello"]["rps"]:.0f}%    (goal >= 60%)')
print(f'rust / hello-body = {100 * rust / rows["hello-body"]["rps"]:.0f}%')
print(f'rust-nohdr / hello = {100 * rows["rust-nohdr"]["rps"] / rows["hello"]["rps"]:.0f}%')
PY
