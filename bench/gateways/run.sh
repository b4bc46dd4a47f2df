#!/usr/bin/env bash
# The gateway benchmark, one command: install the peers, build Modelgate and the test kit's
# mock upstream and streaming client in release mode, run every scenario against every target
# and rewrite the results in bench/README.md. Takes about half an hour on 2 cores (plus the
# first release build). `bench/gateways/run.sh modelgate nginx` runs only those targets (and
# then leaves the README alone); BENCH_QUICK=1 shortens every run to check the harness itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
ensure_build_deps
bash bench/gateways/setup.sh
cargo build --release -p modelgate-server --bin modelgate -p modelgate-testkit \
  --bin mock-upstream --bin stream-load
exec python3 bench/gateways/harness.py "$@"
