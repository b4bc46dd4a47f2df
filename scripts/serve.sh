#!/usr/bin/env bash
# Quick start, step 1: install build dependencies, build Modelgate, and serve the embedded
# models on http://127.0.0.1:8080 (the models are fetched on first start). Extra arguments go
# to `modelgate serve`, e.g. `--config modelgate.toml`. On loopback with no credentials anyone
# may call; `--listen 0.0.0.0:8080` needs a credential first (`modelgate keys create`, or
# `[auth] admin_key_env`) or an explicit `auth.mode = "none"` — see docs/identity.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_deps
cargo build --release --locked -p modelgate-server
exec "$CARGO_TARGET_DIR/release/modelgate" serve "$@"
