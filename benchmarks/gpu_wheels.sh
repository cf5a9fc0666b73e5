#!/usr/bin/env bash
# Gather, on a machine with PyPI, the wheels benchmarks/gpu_run.sh installs on a GPU machine that
# has no network: promptwire's workspace packages (built here) and the Python packages a GPU
# image with torch, transformers, pytest and their usual company lacks, at the versions uv.lock
# pins, for CPython 3.12 on x86-64 Linux. About 20 MB.
#
#   benchmarks/gpu_wheels.sh [DIR]        # default .whl (keep it out of git: .git/info/exclude)
#
# Another image or Python: set PYTHON_VERSION (default 3.12) and adjust CARRY below.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.whl}
python_version=${PYTHON_VERSION:-3.12}

# What the GPU run imports that such an image usually lacks (the engine and server path, the
# GPU tests with their openai SDK and ChatOpenAI checks, the benchmark's HTTP contender): the closure of promptwire-modal-exllama's locked
# dependencies without modal (imported only to deploy), less what the image holds. exllamav2 is a py3-none-any wheel; its CUDA
# extension is compiled on the GPU machine at first import.
CARRY=(
    annotated-types distro fastapi httpcore2 httpx-sse httpx2 jsonpatch jsonpointer
    langchain-core langchain-protocol langsmith opentelemetry-api orjson pydantic pydantic-core
    pydantic-settings python-dotenv requests-toolbelt sniffio sse-starlette starlette tenacity
    truststore typing-inspection uuid-utils uvicorn zstandard pytest-asyncio
    openai jiter langchain-openai
)

rm -rf "$out" && mkdir -p "$out"
uv build --quiet --all-packages --wheel -o "$out"
rm -f "$out"/*.tar.gz "$out"/.gitignore
pinned=$(mktemp)
uv export --quiet --locked --no-hashes --no-emit-workspace --all-packages --all-groups |
    grep -v '^ *#' | sed 's/ *;.*$//' | grep '==' >"$pinned"
requirements=$(mktemp)
for name in "${CARRY[@]}"; do
    line=$(grep -i "^${name}==" "$pinned" || true)
    if [ -z "$line" ]; then
        echo "gpu_wheels: $name is not in uv.lock" >&2
        exit 1
    fi
    echo "$line" >>"$requirements"
done
echo "exllamav2==0.3.2" >>"$requirements"
log=$(mktemp)
if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$out" \
    --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    -r "$requirements" 2>"$log"; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2
    exit 1
fi
rm -f "$pinned" "$requirements" "$log"
echo "gpu_wheels: $(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1) in $out"
