"""The Modal images install the versions uv.lock pins: the requirements files they install are
exported from the lock, and fail here as soon as the lock changes without them."""

from __future__ import annotations

import pytest

from tests.support.locked_requirements import EXPORTS, ROOT, Export, render


@pytest.mark.parametrize("export", EXPORTS, ids=lambda export: export.path.name)
def test_the_image_requirements_are_exported_from_uv_lock(export: Export) -> None:
    committed = (ROOT / export.path).read_text(encoding="utf-8")
    assert committed == render(export), (
        f"{export.path} is stale after a change to uv.lock: regenerate it with "
        "`uv run python -m tests.support.locked_requirements` and commit it"
    )


def _pins(name: str) -> dict[str, str]:
    export = next(export for export in EXPORTS if export.path.name == name)
    pins = {}
    for line in (ROOT / export.path).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.split(";")[0].strip().partition("==")
            pins[package] = version
    return pins


def test_every_pin_is_exact() -> None:
    for export in EXPORTS:
        assert all(_pins(export.path.name).values()), export.path


def test_the_server_image_has_the_server_and_not_modal() -> None:
    pins = _pins("modal-requirements.txt")
    assert {"fastapi", "uvicorn", "sse-starlette", "pydantic-settings", "httpx"} <= set(pins)
    assert "modal" not in pins  # Modal adds its own client to every container
    assert not any(name.startswith("promptwire") for name in pins)  # uploaded as source


def test_the_exllama_images_get_jinja2_and_the_hub_but_not_the_gpu_wheels() -> None:
    gpu, download = _pins("modal-requirements-gpu.txt"), _pins("modal-requirements-download.txt")
    for pins in (gpu, download):
        assert {"jinja2", "huggingface-hub", "fastapi"} <= set(pins)
        # The image pins these itself, to builds with prebuilt CUDA kernels.
        assert not {"torch", "exllamav2", "flash-attn", "modal"} & set(pins)
        assert not any(name.startswith(("nvidia-", "triton")) for name in pins)
    assert "tokenizers" in gpu  # imported by exllamav2 without being declared
    assert "pandas" in gpu and "pandas" not in download  # exllamav2's, for the GPU image only
