#!/usr/bin/env bash
# Quick start, step 2: run the whole test suite — Rust unit and integration tests (nextest)
# and the client conformance tests (openai SDK, boto3) against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_deps
ensure_test_deps
# PostgreSQL and Redis for the storage conformance suite and the multi-replica tests (started
# when installed but down; under CI the suite fails rather than skips when they are missing).
ensure_services

venv="${MODELGATE_VENV:-$HOME/.cache/modelgate-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt

cargo build --locked -p modelgate-server -p modelgate-testkit --bins
"$CARGO_TARGET_DIR/debug/modelgate" models pull

echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi

echo "== Client conformance tests"
MODELGATE_BIN="$CARGO_TARGET_DIR/debug/modelgate" "$venv/bin/python" -m pytest tests/clients -q -p no:cacheprovider
