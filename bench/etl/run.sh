#!/usr/bin/env bash
# ETL benchmark: the pipeline's load of the full generated dataset beside psql \copy
# of the same files into the same tables, in the same run (the floor). Prints times
# and the ratio; the goal is within 1.5x of the floor.
#
#   bench/etl/run.sh                      # release build, 150,000 customers, 36 months
#   ETL_BENCH_ROUNDS=1 bench/etl/run.sh   # one round
#   PROFILE=dev bench/etl/run.sh          # quicker to build, slower to run
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
    exec cargo bench -p pipeline --bench etl
else
    exec cargo bench -p pipeline --bench etl --profile "$profile"
fi
