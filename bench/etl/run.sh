#!/usr/bin/env bash
# ETL benchmark: the release `pipeline` binary, as users run it, loads the generated
# dataset (load-customers, then catch-up of the months: validation, binary COPY, the
# table checks, the ledger) beside psql \copy of the same files into the same tables
# (the floor: no validation, no checks), in the same run, on a private PostgreSQL
# cluster (loopback only, fsync off, as the tests' harness runs it). Each scale is
# generated once (1x = 150,000 customers); each round loads it into fresh databases.
# Prints every round (times, load-customers' peak RSS from GNU time), then a
# "median of" line per scale. Goals: below 1.0x the floor; peak RSS at 10x within
# 1.3x of 1x, at 100x within 1.5x.
#
#   bench/etl/run.sh                            # 1x (5 rounds) and 10x (1 round)
#   ETL_BENCH_SCALES=1,10,100 bench/etl/run.sh  # and 100x (15 M customers, 1.7 GB of files)
#   ETL_BENCH_ROUNDS=1 bench/etl/run.sh         # rounds at 1x (larger scales:
#                                               #   ETL_BENCH_ROUNDS_LARGE, default 1)
#   PROFILE=dev bench/etl/run.sh                # quicker to build, slower to run
#   PIPELINE_BIN=path/to/pipeline bench/etl/run.sh  # no build
#   ETL_BENCH_ENV="GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576" bench/etl/run.sh  # the pipeline's environment
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-release}"
scales="${ETL_BENCH_SCALES:-1,10}"
rounds="${ETL_BENCH_ROUNDS:-5}"
rounds_large="${ETL_BENCH_ROUNDS_LARGE:-1}"
months="${ETL_BENCH_MONTHS:-36}"
target="${CARGO_TARGET_DIR:-target}"

if [ -n "${PIPELINE_BIN:-}" ]; then
  bin="$(realpath "$PIPELINE_BIN")"     # an already built binary
else
  cargo build --profile "$profile" -p pipeline --bin pipeline
  dir="$profile"
  [ "$profile" = dev ] && dir=debug
  bin="$(realpath "$target/$dir/pipeline")"
fi
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time) for peak RSS" >&2; exit 1; }

# ETL_BENCH_ENV: NAME=VALUE words for the pipeline's environment (see bench/README.md).
read -ra bench_env <<<"${ETL_BENCH_ENV:-}"
pg_bin="${PG_BIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
[ -x "$pg_bin/initdb" ] || { echo "no PostgreSQL server binaries: run tools/bootstrap.sh or set PG_BIN" >&2; exit 1; }
work="$(mktemp -d /tmp/etl-bench.XXXXXX)"
# PostgreSQL refuses to run as root: then the cluster runs as Debian's postgres user.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
  chown postgres "$work"
fi
cleanup() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
printf '%s' "$password" >"$work/pwfile"
[ "${#as_pg[@]}" -gt 0 ] && chown postgres "$work/pwfile"
"${as_pg[@]}" env LC_ALL=C.UTF-8 "$pg_bin/initdb" -D "$work/pg" -U postgres -E UTF8 --no-locale \
  --no-sync --auth=scram-sha-256 --pwfile "$work/pwfile" >/dev/null
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w -o "-c listen_addresses=127.0.0.1 \
  -p $port -k $work -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  -c max_connections=200" start >/dev/null
export PGPASSWORD="$password"
psql=("$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
url() { echo "postgres://postgres:$password@127.0.0.1:$port/$1"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
secs() { calc "$2 - $1"; }
fresh() { # a new database with the schema
  "${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  DATABASE_URL="$(url "$1")" "$bin" db migrate >/dev/null
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

first=2020-01
until="$(date -u -d "2020-01-01 +$((months - 1)) month" +%Y-%m)"
summary=()
IFS=, read -r -a scale_list <<<"$scales"
for scale in "${scale_list[@]}"; do
  data="$work/data-${scale}x"
  t0=$(now)
  "$bin" generate --out "$data" --customers $((150000 * scale)) --months "$months" >"$work/gen.txt"
  echo "${scale}x dataset: $(head -1 "$work/gen.txt" | sed 's/ into .*//'), $(du -sm "$data" | cut -f1) MB, generated in $(printf %.1f "$(secs "$t0" "$(now)")")s"
  customers_sql="$work/customers.psql"
  {
    echo "\\copy customer_activity (idx,valid_from,valid_to,scd_a,scd_b) FROM '$data/customer_activity.csv' WITH (FORMAT csv, HEADER true)"
    echo "\\copy customer_profiles (idx,attr_a,attr_b,attr_c) FROM '$data/customer_profiles.csv' WITH (FORMAT csv, HEADER true)"
    echo "\\copy labels (idx,label) FROM '$data/labels.csv' WITH (FORMAT csv, HEADER true)"
  } >"$customers_sql"
  months_sql="$work/months.psql"
  for f in "$data"/sales/*/sales.csv; do  # a glob expands in sorted order
    echo "\\copy sales (idx,value,date,store_idx) FROM '$f' WITH (FORMAT csv, HEADER true)"
  done >"$months_sql"
  n=$rounds
  [ "$scale" -gt 1 ] && n=$rounds_large
  : >"$work/rounds.txt"
  for round in $(seq "$n"); do
    # The floor: psql \copy of the raw files, no validation, no checks.
    fresh floor
    t0=$(now)
    "${psql[@]}" -d floor -f "$customers_sql"
    t1=$(now)
    "${psql[@]}" -d floor -f "$months_sql"
    t2=$(now)
    floor_c=$(secs "$t0" "$t1")
    floor_m=$(secs "$t1" "$t2")
    # The pipeline: validation, COPY, table checks, ledger, monthly aggregates.
    fresh etl
    export DATABASE_URL
    DATABASE_URL="$(url etl)"
    t0=$(now)
    /usr/bin/time -f %M -o "$work/rss" env "${bench_env[@]}" "$bin" load-customers --source "$data" >/dev/null 2>>"$work/pipeline.log" ||
      { tail -20 "$work/pipeline.log" >&2; exit 1; }
    t1=$(now)
    env "${bench_env[@]}" "$bin" catch-up --source "$data" --start "$first" --until "$until" >/dev/null \
      2>>"$work/pipeline.log" || { tail -20 "$work/pipeline.log" >&2; exit 1; }
    t2=$(now)
    unset DATABASE_URL
    ok=$("${psql[@]}" -d etl -Atc "SELECT count(*) FROM pipeline_runs WHERE status = 'success'")
    [ "$ok" = $((months + 1)) ] || { echo "round $round: $ok successful runs, expected $((months + 1))" >&2; exit 1; }
    etl_c=$(secs "$t0" "$t1")
    etl_m=$(secs "$t1" "$t2")
    rss_mb=$(( $(tail -1 "$work/rss") / 1024 ))
    floor=$(calc "$floor_c + $floor_m")
    etl=$(calc "$etl_c + $etl_m")
    ratio=$(calc "$etl / $floor")
    printf '%sx round %s: psql \\copy %.2fs (customers %.2fs, months %.2fs) | pipeline %.2fs (load-customers %.2fs, peak RSS %s MB; %s months %.2fs) | ratio %.2fx\n' \
      "$scale" "$round" "$floor" "$floor_c" "$floor_m" "$etl" "$etl_c" "$rss_mb" "$months" "$etl_m" "$ratio"
    echo "$floor $etl $etl_c $rss_mb" >>"$work/rounds.txt"
  done
  mf=$(cut -d' ' -f1 "$work/rounds.txt" | median)
  me=$(cut -d' ' -f2 "$work/rounds.txt" | median)
  mc=$(cut -d' ' -f3 "$work/rounds.txt" | median)
  mr=$(cut -d' ' -f4 "$work/rounds.txt" | median)
  [ -z "${base_rss:-}" ] && base_rss=$mr && base_scale=$scale
  rss_note=""
  [ "$scale" != "$base_scale" ] && rss_note=$(printf ', %.2fx the %sx peak RSS' "$(calc "$mr / $base_rss")" "$base_scale")
  summary+=("$(printf 'median of %s (%sx): psql \\copy %.2fs, pipeline %.2fs (load-customers %.2fs, peak RSS %s MB%s): %.2fx the floor (goal < 1.0x)' \
    "$n" "$scale" "$mf" "$me" "$mc" "$mr" "$rss_note" "$(calc "$me / $mf")")")
  rm -rf "$data"
done
printf '%s\n' "${summary[@]}"
