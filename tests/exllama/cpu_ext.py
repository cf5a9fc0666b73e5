"""exllamav2's C++ extension for the CPU test tier: its CPU code compiled, its kernels stood in for.

``exllamav2.ext`` imports a module named ``exllamav2_ext`` and, when there is none, compiles all of
its C++/CUDA sources, which cannot work without CUDA. The CPU tier puts a module of that name in
``sys.modules`` first, made of:

- exllamav2's own CPU sources, compiled unchanged with ``torch.utils.cpp_extension`` from the
  installed package: the sampler (``ext_sampling.cpp``, ``cpp/sampling*.cpp``,
  ``cpp/profiling.cpp``) and the stop-string matcher (``cpp/generator.cpp``).
  ``ext_sampling.cpp`` includes four CUDA headers it never uses; empty files stand in for them.
  ``cpu_ext_bindings.cpp`` binds these functions under exllamav2's names (its own binding file
  also binds every CUDA kernel).
- Python stand-ins for the two other entry points the generator calls: ``count_match`` (a CPU
  loop in ``ext_cache.cpp``, a file that cannot be built without CUDA) and ``cache_rotate`` (the
  CUDA kernel that moves cache pages when the generator defragments), each checking what the
  original checks.
- Any other name (the model's kernels) raises an AttributeError that says so: the forward pass is
  replaced as a whole (``cpu_standin``), so none of them should ever be reached.

The build goes to a directory inside the virtual environment (``sys.prefix``), outside git, and
is reused until torch, exllamav2 or a source changes (``torch.utils.cpp_extension`` checks).
Compile it ahead of time with ``uv run python -m tests.exllama.cpu_ext``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import platform
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any

EXLLAMAV2_VERSION = "0.3.2"
MODULE_NAME = "exllamav2_ext"
COMPILED_NAME = "promptwire_exllamav2_cpu_ext"
HERE = Path(__file__).resolve().parent
BINDINGS = HERE / "cpu_ext_bindings.cpp"
#: exllamav2's CPU sources, relative to its ``exllamav2_ext`` directory.
SOURCES = (
    "ext_sampling.cpp",
    "cpp/sampling.cpp",
    "cpp/sampling_avx2.cpp",
    "cpp/profiling.cpp",
    "cpp/generator.cpp",
)
#: exllamav2's own flag for its C++ sources.
CFLAGS = ("-Ofast",)
#: Included by ext_sampling.cpp, never used by it.
UNUSED_CUDA_HEADERS = (
    "c10/cuda/CUDAGuard.h",
    "ATen/cuda/CUDAContext.h",
    "cuda_runtime.h",
    "cuda_fp16.h",
)


class TierUnavailable(Exception):
    """The CPU tier cannot run on this machine; the message says why (a skip reason)."""


def _installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def exllamav2_source_dir() -> Path:
    """The installed package's extension sources, found without importing exllamav2 (whose
    import would try to compile the CUDA extension)."""
    spec = importlib.util.find_spec("exllamav2")
    if spec is None or not spec.submodule_search_locations:
        raise TierUnavailable("exllamav2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "exllamav2_ext"


def unavailable_reason() -> str | None:
    """Why the tier cannot run here, or None. Cheap: imports nothing heavy."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (the CPU tier needs a CPU build; see .ci/run)"
    installed = _installed_version("exllamav2")
    if installed is None:
        return "exllamav2 is not installed (the CPU tier needs exllamav2==0.3.2; see .ci/run)"
    if installed != EXLLAMAV2_VERSION:
        return (
            f"exllamav2 {installed} is installed; the CPU tier is written for {EXLLAMAV2_VERSION}"
        )
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"exllamav2's CPU sampler uses x86 AVX2 code; this machine is {platform.machine()}"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH) to build exllamav2's CPU sampler"
    if shutil.which("ninja") is None:
        return "ninja is not on PATH (torch.utils.cpp_extension needs it)"
    missing = [s for s in SOURCES if not (exllamav2_source_dir() / s).is_file()]
    if missing:
        return f"the installed exllamav2 lacks its CPU sources: {', '.join(missing)}"
    return None


def build_directory() -> Path:
    import torch

    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    tag = f"exllamav2-{EXLLAMAV2_VERSION}-torch-{torch.__version__}-{python}"
    return Path(sys.prefix) / "promptwire-cache" / "exllamav2-cpu-ext" / tag


def _write_empty_headers(root: Path) -> Path:
    shim = root / "unused-cuda-headers"
    for header in UNUSED_CUDA_HEADERS:
        path = shim / header
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                "// Included by exllamav2's ext_sampling.cpp, which uses nothing from it.\n"
            )
    return shim


def _build_key(source_dir: Path) -> str:
    """What the compiled module depends on: every source and header compiled, the flags, torch
    and Python. (ninja alone would rebuild whenever torch is reinstalled, which touches its
    headers, as ``uv sync`` followed by the install step does.)"""
    import torch

    digest = hashlib.sha256()
    files = [BINDINGS, *sorted(source_dir.glob("cpp/*")), *sorted(source_dir.glob("*.h"))]
    files += [source_dir / s for s in SOURCES]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(" ".join([*CFLAGS, torch.__version__, sys.version]).encode())
    return digest.hexdigest()


def _load_built(root: Path, key: str) -> Any | None:
    stamp, library = root / "build-key", root / f"{COMPILED_NAME}.so"
    if not (stamp.is_file() and library.is_file()) or stamp.read_text() != key:
        return None
    import torch  # noqa: F401  # the module links against libtorch

    spec = importlib.util.spec_from_file_location(COMPILED_NAME, library)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_extension() -> Any:
    """exllamav2's CPU code as a Python module (compiled on first use, then loaded from cache)."""
    reason = unavailable_reason()
    if reason is not None:
        raise TierUnavailable(reason)
    source_dir = exllamav2_source_dir()
    root = build_directory()
    root.mkdir(parents=True, exist_ok=True)
    key = _build_key(source_dir)
    built = _load_built(root, key)
    if built is not None:
        return built
    from torch.utils import cpp_extension

    shim = _write_empty_headers(root)
    try:
        module = cpp_extension.load(
            name=COMPILED_NAME,
            sources=[str(BINDINGS)] + [str(source_dir / s) for s in SOURCES],
            extra_include_paths=[str(shim), str(source_dir)],
            extra_cflags=list(CFLAGS),
            build_directory=str(root),
            with_cuda=False,
            verbose=False,
        )
    except Exception as exc:  # a compiler or linker failure: say so as the skip reason
        raise TierUnavailable(f"building exllamav2's CPU sampler failed: {exc}") from exc
    (root / "build-key").write_text(key)
    return module


# -- stand-ins for the two entry points that are not in the CPU sources -------------------------


def count_match(a: Any, b: Any, max_a: int) -> int:
    """``ext_cache.cpp``'s ``count_match``: how many leading ids of ``a`` and ``b`` (both shape
    (1, n), int64) are equal, looking at most ``max_a`` ids and at most ``b``'s length."""
    import torch

    assert a.dtype == torch.long and b.dtype == torch.long, "count_match takes int64 tensors"
    limit = min(int(max_a), int(b.shape[1]))
    if limit <= 0:
        return 0
    left = a.reshape(-1)[:limit]
    right = b.reshape(-1)[:limit]
    assert left.numel() == limit, "count_match would read past the end of a"
    same = (left == right).to(torch.int64)
    return int(same.cumprod(0).sum())


def cache_rotate(cache: Any, order: Any, temp: Any) -> None:
    """The ``cache_rotate`` kernel on the CPU: with ``cache`` viewed as (pages, ...),
    ``temp <- page[order[0]]``, then ``page[a] <- page[b]`` for each pair, then
    ``page[order[-1]] <- temp``. Checks what the kernel checks, and that every page index is in
    range (the kernel would write outside the cache)."""
    assert cache.dim() > 1, "cache argument must have dim >= 2"
    assert order.dim() == 1, "order argument must have dim == 1"
    pages = int(cache.shape[0])
    page_bytes = cache.numel() * cache.element_size() // pages
    assert temp.numel() * temp.element_size() == page_bytes, "temp tensor incorrect size"
    indices = [int(i) for i in order.tolist()]
    assert indices, "an empty rotation"
    assert all(0 <= i < pages for i in indices), f"page index out of range 0..{pages - 1}"
    assert temp.dtype == cache.dtype, "temp tensor has the cache's dtype"
    buffer = temp.reshape(cache[0].shape)
    buffer.copy_(cache[indices[0]])
    for target, source in itertools.pairwise(indices):
        cache[target].copy_(cache[source])
    cache[indices[-1]].copy_(buffer)


def _refuse(name: str) -> Any:
    raise AttributeError(
        f"exllamav2_ext.{name} is a CUDA kernel; the CPU test tier replaces the model's forward "
        "pass as a whole, so nothing should call it (only a GPU runs it)"
    )


def install() -> types.ModuleType:
    """Put the CPU ``exllamav2_ext`` in ``sys.modules`` (before exllamav2 is imported) and
    return it. Idempotent."""
    existing = sys.modules.get(MODULE_NAME)
    if existing is not None and getattr(existing, "__promptwire_cpu_tier__", False):
        return existing
    if "exllamav2.ext" in sys.modules:
        raise TierUnavailable(
            "exllamav2 was imported before the CPU tier could provide its extension"
        )
    compiled = compile_extension()
    module = types.ModuleType(MODULE_NAME, __doc__)
    for name in dir(compiled):
        if not name.startswith("__"):
            setattr(module, name, getattr(compiled, name))
    module.count_match = count_match  # type: ignore[attr-defined]
    module.cache_rotate = cache_rotate  # type: ignore[attr-defined]
    module.__getattr__ = _refuse  # type: ignore[method-assign]
    module.__promptwire_cpu_tier__ = True  # type: ignore[attr-defined]
    sys.modules[MODULE_NAME] = module
    return module


def main() -> None:
    reason = unavailable_reason()
    if reason is not None:
        print(f"exllamav2 CPU tier: skipped ({reason})")
        return
    started = time.perf_counter()
    compile_extension()
    print(
        f"exllamav2 CPU tier: extension ready in {time.perf_counter() - started:.1f} s "
        f"({build_directory()})"
    )


if __name__ == "__main__":
    main()
