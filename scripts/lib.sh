# Shared helpers for the scripts in this folder (sourced, not run).

# Install the Debian packages the build needs (cmake and clang for llama.cpp), when missing.
ensure_build_deps() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  [ -n "$(ls /usr/lib/llvm-*/lib/libclang*.so* 2>/dev/null | head -n1)" ] || missing+=(libclang-dev)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "modelgate: installing build dependencies: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Install what only the tests need: a real Prometheus server to scrape the gateway.
ensure_test_deps() {
  command -v prometheus >/dev/null 2>&1 && return 0
  echo "modelgate: installing test dependencies: prometheus" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

# Cargo caches: the target directory and model files live outside the clone by default so a
# fresh clone reuses earlier builds (llama.cpp takes minutes to compile on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/modelgate-target}"
export MODELGATE_HOME="${MODELGATE_HOME:-$HOME/.local/share/modelgate}"

# Whether something listens on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Start PostgreSQL and Redis when they are down (the storage conformance suite and the
# multi-replica tests run against the real servers), then point the tests at them.
ensure_services() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! port_open 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "modelgate: starting PostgreSQL" >&2
    $sudo pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  if ! port_open 6379 && command -v redis-server >/dev/null 2>&1; then
    echo "modelgate: starting Redis" >&2
    $sudo redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  for _ in $(seq 1 50); do
    port_open 5432 && port_open 6379 && break
    sleep 0.2
  done
  if port_open 5432; then
    export MODELGATE_TEST_POSTGRES_URL="${MODELGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
  fi
  if port_open 6379; then
    export MODELGATE_TEST_REDIS_URL="${MODELGATE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
  fi
}
