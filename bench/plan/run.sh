#!/usr/bin/env bash
# Plan benchmark: a no-op `deployer plan` of the whole stack against the emulator, the
# batched refresh (one listing per EC2 type, one read per IAM resource, four calls at a
# time) beside the per-resource refresh (every read its own call, one after the other)
# in the same run, each with the state read and the lock. Prints the requests by type,
# as the emulator's recorder counted them, and the wall times.
#
#   bench/plan/run.sh                            # emulator latency 0 ms, then 50 ms
#   PLAN_BENCH_LATENCY_MS="0 100" bench/plan/run.sh
#   PLAN_BENCH_ROUNDS=9 bench/plan/run.sh        # timed rounds per latency (5)
#
# The latency (LOCAL_CLOUD_LATENCY_MS, tests/harness/cloud/moto_aws.py) stands for
# AWS's own round trip (50-300 ms per call); moto on loopback answers in about a
# millisecond. The test profile's build (the one `make test` uses): the time is the
# round trips', not the deployer's code.
set -euo pipefail
cd "$(dirname "$0")/../.."
for ms in ${PLAN_BENCH_LATENCY_MS:-0 50}; do
    echo "--- emulator latency ${ms} ms"
    LOCAL_CLOUD_LATENCY_MS="$ms" cargo test --workspace --test plan_bench -- \
        --ignored --exact noop_plan --nocapture --test-threads=1 2>&1 |
        grep -vE '^(running [0-9]+ tests?|test result:.*|test noop_plan .*|ok|[[:space:]]*)$'
done
