#!/usr/bin/env bash
# Embedded model speed next to llama.cpp's own llama-bench, same GGUF, same machine.
#
# llama-cpp-sys-2 vendors llama.cpp without its tools, so llama-bench is built from the full
# llama.cpp tree inside the llama-cpp-python sdist on PyPI (pinned below; its llama.cpp is a
# close but not identical revision), for the x86-64-v3 instruction set Modelgate's build uses.
# (A GGML_NATIVE build dies with SIGILL on our benchmark VM, whose CPU advertises AVX-512
# features the hypervisor does not fully provide.) Then runs Modelgate's own benchmark
# (crates/providers/benches/local_llama.rs). Run on an idle machine: a parallel build cuts
# generation speed by 30x or more.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_deps
threads="${THREADS:-$(nproc)}"
gguf="$MODELGATE_HOME/models/local.smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || cargo run --release --locked -p modelgate-server -- models pull
out="${BENCH_BUILD_DIR:-$HOME/.cache/modelgate-bench}"
sdist=llama_cpp_python-0.3.36
if [ ! -d "$out/$sdist" ]; then
  mkdir -p "$out"
  python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==0.3.36" -d "$out"
  tar xzf "$out/$sdist.tar.gz" -C "$out"
fi
src="$out/$sdist/vendor/llama.cpp"
build() { # name, extra cmake flags
  local dir="$out/build-$sdist-$1"
  if [ ! -x "$dir/bin/llama-bench" ]; then
    cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF "${@:2}" >/dev/null
    cmake --build "$dir" --target llama-bench -j"$(nproc)" >"$dir.log" 2>&1
  fi
  echo "$dir/bin/llama-bench"
}
v3=$(build x86-64-v3 -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
echo "== llama-bench (x86-64-v3, as Modelgate is built), $threads threads"
"$v3" -m "$gguf" -p 512 -n 128 -t "$threads" -r 5 -o md
echo "== Modelgate embedded provider"
cargo bench --locked -p modelgate-providers --bench local_llama
