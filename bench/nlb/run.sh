#!/usr/bin/env bash
# Balancer benchmark: POST /predict throughput through the local cloud's Network Load
# Balancer stand-in (front = "nlb") with 1, 2 and 3 instances per colour, each deployed
# by the deployer from user data, measured in turn each round, each with its ratio to
# one instance in the same run.
#
#   bench/nlb/run.sh
#   NLB_BENCH_ROUNDS=5 NLB_BENCH_SECONDS=10 NLB_BENCH_CONNECTIONS=32 bench/nlb/run.sh
#
# The test profile's build (the one `make test` uses): the instances run the debug
# `server`. On a two-core machine the load generator, the stand-in (a TCP proxy in the
# test process) and every instance share the same two cores: the figures show the
# stand-in spreading load, not how a real balancer scales.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --workspace --test nlb_deploy -- \
    --ignored --exact nlb_throughput --nocapture --test-threads=1 2>&1 |
    sed -E 's/^test nlb_throughput \.\.\. //' |
    grep -vE '^(running [0-9]+ tests?|test result:.*|ok|[[:space:]]*)$'
