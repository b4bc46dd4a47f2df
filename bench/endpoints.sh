#!/usr/bin/env bash
# The declarative-endpoint benchmark (bench/endpoints.py): the gateway benchmark's tools (wrk,
# taskset), a release build, then the run (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_deps
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
command -v wrk >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk
cargo build --release -p modelgate-server --bin modelgate -p modelgate-testkit --bin mock-upstream
exec python3 bench/endpoints.py "$@"
