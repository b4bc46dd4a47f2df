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

# Cargo caches: the target directory and model files live outside the clone by default so a
# fresh clone reuses earlier builds (llama.cpp takes minutes to compile on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/modelgate-target}"
export MODELGATE_HOME="${MODELGATE_HOME:-$HOME/.local/share/modelgate}"
