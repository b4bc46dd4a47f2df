#!/usr/bin/env bash
# Install the peers the gateway benchmark compares against, from the package registries, into
# a cache outside the clone (idempotent; a second run only checks). Versions are pinned so runs
# compare like with like.
set -euo pipefail

BENCH_HOME="${BENCH_HOME:-$HOME/.cache/modelgate-bench}"
LITELLM_VERSION="${LITELLM_VERSION:-1.98.0}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
mkdir -p "$BENCH_HOME"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# LiteLLM proxy, in its own virtualenv.
if ! "$BENCH_HOME/litellm-venv/bin/litellm" --version 2>/dev/null | grep -q "$LITELLM_VERSION"; then
  echo "bench: installing litellm[proxy]==$LITELLM_VERSION" >&2
  python3 -m venv "$BENCH_HOME/litellm-venv"
  "$BENCH_HOME/litellm-venv/bin/pip" install -q --disable-pip-version-check \
    "litellm[proxy]==$LITELLM_VERSION"
fi

# Portkey gateway, from npm.
if [ ! -f "$BENCH_HOME/portkey/node_modules/@portkey-ai/gateway/package.json" ] ||
   ! grep -q "\"version\": \"$PORTKEY_VERSION\"" "$BENCH_HOME/portkey/node_modules/@portkey-ai/gateway/package.json"; then
  echo "bench: installing @portkey-ai/gateway@$PORTKEY_VERSION" >&2
  mkdir -p "$BENCH_HOME/portkey"
  (cd "$BENCH_HOME/portkey" && npm install --silent --no-audit --no-fund \
    "@portkey-ai/gateway@$PORTKEY_VERSION" >/dev/null)
fi
echo "bench: peers ready in $BENCH_HOME" >&2
