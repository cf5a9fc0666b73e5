"""What the Modal images install, read offline by recording the Image calls an app module makes
when it is imported on the deploying machine, and what they need inside a container."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import modal
import pytest
from promptwire.errors import ConfigurationError
from promptwire.modal.image import SERVER_REQUIREMENTS, promptwire_image

from tests.support.locked_requirements import EXPORTS, ROOT
from tests.support.optional import NEEDS_LLAMACPP_PLUGIN


@pytest.fixture()
def installs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ``Image.uv_pip_install`` and ``add_local_python_source`` call, in order."""
    calls: list[dict[str, Any]] = []
    install, add_source = modal.Image.uv_pip_install, modal.Image.add_local_python_source

    def recording_install(self: modal.Image, *packages: str, **options: Any) -> modal.Image:
        calls.append({"packages": packages, **options})
        return install(self, *packages, **options)

    def recording_add_source(self: modal.Image, *modules: str, **options: Any) -> modal.Image:
        calls.append({"sources": modules})
        return add_source(self, *modules, **options)

    monkeypatch.setattr(modal.Image, "uv_pip_install", recording_install)
    monkeypatch.setattr(modal.Image, "add_local_python_source", recording_add_source)
    return calls


def test_the_default_image_installs_the_locked_server_requirements(
    installs: list[dict[str, Any]],
) -> None:
    promptwire_image("my_plugin")
    assert installs == [
        {"packages": (), "requirements": [str(SERVER_REQUIREMENTS)]},
        {"sources": ("promptwire", "my_plugin")},
    ]
    assert ROOT / EXPORTS[0].path == SERVER_REQUIREMENTS


def test_in_a_container_the_image_needs_no_requirements_file(
    installs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A container has the sources only: the recipe is not rebuilt there, so the missing file
    is no error."""
    monkeypatch.setattr(modal, "is_local", lambda: False)
    image = promptwire_image("my_plugin", requirements=tmp_path / "absent.txt")
    assert isinstance(image, modal.Image)
    assert installs == [{"sources": ("promptwire", "my_plugin")}]


def test_on_the_deploying_machine_a_missing_requirements_file_is_a_clear_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="requirements file is missing"):
        promptwire_image("my_plugin", requirements=tmp_path / "absent.txt")


def test_the_exllama_images_install_the_locked_requirements_with_the_gpu_wheels(
    installs: list[dict[str, Any]],
) -> None:
    module_name = "promptwire_modal_exllama.modal_app"
    sys.modules.pop(module_name, None)
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.modules.pop(module_name, None)
    gpu_file = module.GPU_REQUIREMENTS
    download_file = module.DOWNLOAD_REQUIREMENTS
    assert {gpu_file, download_file} == {ROOT / export.path for export in EXPORTS[1:3]}
    torch, gpu, gpu_source, download, download_source = installs
    assert torch == {"packages": ("torch==2.7.0",), "index_url": module.TORCH_INDEX_URL}
    assert gpu == {
        "packages": (
            f"exllamav2 @ {module.EXLLAMAV2_WHEEL}",
            f"flash-attn @ {module.FLASH_ATTN_WHEEL}",
        ),
        "requirements": [str(gpu_file)],
    }
    assert download == {"packages": (), "requirements": [str(download_file)]}
    for source in (gpu_source, download_source):
        assert source == {"sources": ("promptwire", "promptwire_modal_exllama")}


@pytest.mark.parametrize(
    ("gpu", "cmake_flag"), [(None, "-DGGML_AVX2=ON"), ("L4", "-DGGML_CUDA=ON")]
)
@NEEDS_LLAMACPP_PLUGIN
def test_the_llamacpp_image_compiles_llama_cpp_for_its_machine(
    installs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    gpu: str | None,
    cmake_flag: str,
) -> None:
    """The locked requirements (llama-cpp-python among them, compiled as the image is built)
    over a base that has a compiler and says how to build llama.cpp: portable CPU code, or
    CUDA on NVIDIA's development image for a GPU."""
    if gpu is not None:
        monkeypatch.setenv("PROMPTWIRE_LLAMACPP__GPU", gpu)
    module_name = "promptwire_llamacpp.modal_app"
    sys.modules.pop(module_name, None)
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.modules.pop(module_name, None)
    assert ROOT / EXPORTS[3].path == module.REQUIREMENTS
    assert "llama-cpp-python==" in module.REQUIREMENTS.read_text()
    assert installs == [
        {"packages": (), "requirements": [str(module.REQUIREMENTS)]},
        {"sources": ("promptwire", "promptwire_llamacpp")},
    ]
    assert cmake_flag in module.cmake_args
