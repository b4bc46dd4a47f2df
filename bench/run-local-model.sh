#!/usr/bin/env bash
# Embedded model speed next to llama.cpp's own llama-bench, same GGUF, same machine.
#
# Builds llama-bench from the llama.cpp source that llama-cpp-sys-2 vendors (the exact code
# Modelgate links), twice: with GGML_NATIVE (llama.cpp's default build) and with the same
# x86-64-v3 instruction set Modelgate's build uses. Then runs Modelgate's own benchmark
# (crates/providers/benches/local_llama.rs). Run on an idle machine: a parallel build cuts
# generation speed by 30x or more.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_deps
threads="${THREADS:-$(nproc)}"
gguf="$MODELGATE_HOME/models/local.smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || cargo run --release --locked -p modelgate-server -- models pull
src=$(ls -d "$HOME"/.cargo/registry/src/*/llama-cpp-sys-2-0.1.160/llama.cpp | head -n1)
out="${BENCH_BUILD_DIR:-$HOME/.cache/modelgate-bench}"
build() { # name, extra cmake flags
  local dir="$out/llama-$1"
  if [ ! -x "$dir/bin/llama-bench" ]; then
    cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON "${@:2}" >/dev/null
    cmake --build "$dir" --target llama-bench -j"$(nproc)" >/dev/null
  fi
  echo "$dir/bin/llama-bench"
}
native=$(build native -DGGML_NATIVE=ON)
v3=$(build x86-64-v3 -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
echo "== llama-bench (GGML_NATIVE=ON), $threads threads"
"$native" -m "$gguf" -p 512 -n 128 -t "$threads" -r 5 -o md
echo "== llama-bench (x86-64-v3, as Modelgate is built), $threads threads"
"$v3" -m "$gguf" -p 512 -n 128 -t "$threads" -r 5 -o md
echo "== Modelgate embedded provider"
cargo bench --locked -p modelgate-providers --bench local_llama
