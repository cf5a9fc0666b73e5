#!/usr/bin/env bash
# Build llama.cpp's own server (llama-server) from the llama.cpp source that llama-cpp-python
# vendors, with the CMake flags this workspace compiles llama-cpp-python with (pyproject.toml,
# [tool.uv.config-settings-package.llama-cpp-python]), so that benchmark 11 compares the
# backend with the program users would otherwise run, on the same llama.cpp.
#
#   benchmarks/build_llama_server.sh          # prints the binary's path (builds it once)
#
# PROMPTWIRE_LLAMA_SERVER_NO_BUILD=1: only say where it is (status 1 when it is not built).
# Idempotent: the binary is kept in ~/.cache/promptwire/llama-server-<version>/ (or
# $PROMPTWIRE_LLAMA_SERVER_CACHE) and not rebuilt while it is there. The source is the sdist in
# uv's cache (put there by `uv sync --all-packages`); failing that, `pip download` fetches it.
# Only the llama-server target is built (-j2 unless JOBS says otherwise); the web UI is left out
# (no npm, no download) and so is HTTPS.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${LLAMA_CPP_PYTHON_VERSION:-$(cd "$here" && uv run --no-sync python -c \
  'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || echo 0.3.36)}"
cache="${PROMPTWIRE_LLAMA_SERVER_CACHE:-$HOME/.cache/promptwire}/llama-server-$version"
binary="$cache/build/bin/llama-server"
if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi
if [[ -n "${PROMPTWIRE_LLAMA_SERVER_NO_BUILD:-}" ]]; then
  echo "llama-server is not built yet ($binary): run $0" >&2
  exit 1
fi

source_dir=""
for candidate in "${UV_CACHE_DIR:-$HOME/.cache/uv}"/sdists-v*/pypi/llama-cpp-python/"$version"/*/src; do
  if [[ -f "$candidate/vendor/llama.cpp/CMakeLists.txt" ]]; then
    source_dir="$candidate/vendor/llama.cpp"
    break
  fi
done
if [[ -z "$source_dir" ]]; then
  mkdir -p "$cache/sdist"
  python3 -m pip download --quiet --no-binary :all: --no-deps -d "$cache/sdist" \
    "llama-cpp-python==$version" >&2
  tar -xzf "$cache"/sdist/llama_cpp_python-"$version".tar.gz -C "$cache/sdist"
  source_dir="$cache/sdist/llama_cpp_python-$version/vendor/llama.cpp"
fi

# The workspace's flags for llama-cpp-python, with the server (and the tools it lives under) on.
flags="$(cd "$here" && python3 -c '
import tomllib
with open("pyproject.toml", "rb") as file:
    config = tomllib.load(file)
args = config["tool"]["uv"]["config-settings-package"]["llama-cpp-python"]["cmake.args"]
print(" ".join(args.split(";")))')"
flags="${flags//-DLLAMA_BUILD_SERVER=OFF/-DLLAMA_BUILD_SERVER=ON}"
flags="${flags//-DLLAMA_BUILD_TOOLS=OFF/-DLLAMA_BUILD_TOOLS=ON}"

echo "building llama-server $version from $source_dir with: $flags" >&2
mkdir -p "$cache"
echo "$flags" >"$cache/cmake-flags.txt"
# shellcheck disable=SC2086  # the flags are words
cmake -S "$source_dir" -B "$cache/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_COMMON=ON $flags \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >&2
cmake --build "$cache/build" --target llama-server -j "${JOBS:-2}" >&2
echo "$binary"
