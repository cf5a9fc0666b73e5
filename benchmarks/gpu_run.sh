#!/usr/bin/env bash
# The whole GPU check in one command, for a CUDA machine with no network and no flash-attn:
#
#   1. (with --wheels DIR) a virtual environment over the machine's Python, whose torch,
#      transformers and pytest it sees, plus the wheels benchmarks/gpu_wheels.sh gathered
#      (promptwire's packages, exllamav2 0.3.2 and what the image lacks);
#   2. exllamav2's CUDA extension, compiled on first import for this GPU only
#      (TORCH_CUDA_ARCH_LIST = its compute capability, MAX_JOBS = the CPU count);
#   3. the GPU tests: pytest -m gpu tests/exllama/test_gpu_engine.py;
#   4. the GPU benchmark: python -m benchmarks.gpu --quick.
#
#   benchmarks/gpu_run.sh [--wheels DIR]
#
# Each step gets what is left of GPU_RUN_BUDGET seconds (default 570, inside a ten-minute limit),
# so the run ends in time even when one step hangs. The log, the test report, the phase timings
# and gpu.json go to $OUT (default /tmp/promptwire-gpu-run). Add the benchmark's figures to
# BENCHMARKS.md afterwards: copy gpu.json to benchmarks/results/ and run
# `uv run --group bench python -m benchmarks --report-only`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/promptwire-gpu-run}
mkdir -p "$out"
exec > >(tee "$out/gpu_run.log") 2>&1

started=$SECONDS
budget=${GPU_RUN_BUDGET:-570}
: >"$out/timings.txt"
phase_started=$SECONDS
phase() {
    local now=$((SECONDS - started))
    [ -n "${current:-}" ] && echo "$current: $((SECONDS - phase_started)) s" >>"$out/timings.txt"
    current=$1
    phase_started=$SECONDS
    echo "== ${now} s: $1"
}
left() {
    local n=$((budget - (SECONDS - started)))
    echo $((n > 1 ? n : 1))
}
fail() {
    phase "stopped"
    echo "gpu_run: $*"
    exit 1
}

python=${PYTHON:-python3}
wheels=""
if [ "${1:-}" = "--wheels" ]; then
    wheels=${2:?--wheels needs a directory}
fi

if [ -n "$wheels" ]; then
    phase "install"
    venv=/tmp/promptwire-gpu-venv
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail "could not make a virtual environment"
    # The machine's packages (torch, transformers, pytest ...) after the venv's own.
    "$python" -c 'import site; print("\n".join(site.getsitepackages()))' \
        >"$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/gpu-image.pth"
    "$venv/bin/python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        "$wheels"/*.whl || fail "installing the wheels from $wheels failed"
    python=$venv/bin/python
fi

phase "check"
"$python" - <<'EOF' || fail "the machine lacks what the run needs (above)"
import importlib.util, shutil, sys
missing = [m for m in ("torch", "exllamav2", "promptwire_modal_exllama", "transformers",
                       "pytest", "pytest_asyncio") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)}")
import torch
if not torch.cuda.is_available():
    sys.exit("no CUDA GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
print("flash-attn:", "installed" if importlib.util.find_spec("flash_attn") else "absent (unpaged)")
print("nvcc:", shutil.which("nvcc") or "not on PATH")
EOF
arch=$("$python" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/promptwire-torch-extensions}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

phase "extension"
echo "building exllamav2_ext for compute capability $TORCH_CUDA_ARCH_LIST with $MAX_JOBS jobs"
timeout "$(left)" "$python" -c 'import exllamav2, exllamav2.ext' ||
    fail "exllamav2's extension did not build or load"

phase "tests"
timeout "$(left)" "$python" -m pytest -m gpu tests/exllama/test_gpu_engine.py -p no:cacheprovider \
    -q -rs --timeout 240 --junitxml "$out/gpu-tests.xml"
tests=$?

phase "benchmark"
timeout "$(left)" "$python" -m benchmarks.gpu --quick --json "$out/gpu.json"
bench=$?

phase "done"
cat "$out/timings.txt"
echo "gpu_run: tests exit $tests, benchmark exit $bench, $((SECONDS - started)) s in all"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
