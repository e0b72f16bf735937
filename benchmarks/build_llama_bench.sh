#!/usr/bin/env bash
# Build llama.cpp's llama-bench from the vendored sources of the installed llama-cpp-python version.
# The binary is cached in benchmarks/.cache (ignored by git); prints its path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
version="$("$python" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')"
cache="$here/.cache/llama-cpp-python-$version"
bin="$cache/build/bin/llama-bench"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  if [ ! -d "$cache/src" ]; then
    "$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$cache" >&2
    tar -xzf "$cache"/llama_cpp_python-"$version".tar.gz -C "$cache"
    mv "$cache/llama_cpp_python-$version" "$cache/src"
  fi
  # the same CMake defaults llama-cpp-python's own build uses (native CPU, OpenMP)
  cmake -S "$cache/src/vendor/llama.cpp" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
  cmake --build "$cache/build" --target llama-bench -j "$(nproc)" >&2
fi
echo "$bin"
