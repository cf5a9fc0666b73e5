"""The Modal app, checked offline: its deploy spec through ``Function.info()``, the download
function's body through ``Function.local()`` (with the Hub and the Volume stood in for)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest

MODULE = "promptwire_modal_exllama.modal_app"


def _import_app(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    for name, value in env.items():
        monkeypatch.setenv(f"PROMPTWIRE_MODAL_EXLLAMA__{name}", value)
    sys.modules.pop(MODULE, None)
    return importlib.import_module(MODULE)


@pytest.fixture()
def default_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    yield _import_app(monkeypatch)
    sys.modules.pop(MODULE, None)


@pytest.fixture()
def custom_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    yield _import_app(
        monkeypatch,
        GPU="H100",
        TIMEOUT="900",
        MAX_INPUTS="32",
        TARGET_INPUTS="16",
        VOLUME_NAME="my-models",
        API_KEY_SECRET="my-token",
        HF_TOKEN_SECRET="my-hf",
        APP_NAME="my-llm",
        CACHE_MODE="Q8",
        HF_REPO="someone/Model-exl2",
        HF_REVISION="6.0bpw",
    )
    sys.modules.pop(MODULE, None)


def test_the_server_spec_by_default(default_app: ModuleType) -> None:
    info = default_app.Server().web.info()
    assert info.gpus == [("L40S", 1)]
    assert info.timeout == 600
    assert info.startup_timeout == 1200
    assert info.concurrency_info.max_inputs == 64
    assert set(info.volumes) == {"/models"}
    assert info.volumes["/models"].name == "promptwire-models"
    assert info.secrets[0] == "modal.Secret.from_name('promptwire-api-key')"
    assert "web" in info.method_details
    assert default_app.app.name == "promptwire-modal-exllama"


def test_the_server_spec_follows_the_settings(custom_app: ModuleType) -> None:
    info = custom_app.Server().web.info()
    assert info.gpus == [("H100", 1)]
    assert info.timeout == 900
    assert (info.concurrency_info.max_inputs, info.concurrency_info.target_inputs) == (32, 16)
    assert info.volumes["/models"].name == "my-models"
    assert info.secrets[:2] == [
        "modal.Secret.from_name('my-token')",
        "modal.Secret.from_name('my-hf')",
    ]
    # The engine's settings reach the container as environment variables.
    assert "PROMPTWIRE_MODAL_EXLLAMA__CACHE_MODE" in info.secrets[2]
    assert custom_app.app.name == "my-llm"
    assert custom_app.settings.scaledown_window == 300


def test_no_secret_when_auth_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import_app(monkeypatch, API_KEY_SECRET="")
    try:
        secrets = module.Server().web.info().secrets
        assert not any("from_name" in secret for secret in secrets)
    finally:
        sys.modules.pop(MODULE, None)


def test_the_download_function_spec(custom_app: ModuleType) -> None:
    info = custom_app.download_model.info()
    assert info.gpus == []  # downloading needs no GPU
    assert info.timeout == 3600
    assert info.volumes["/models"].name == "my-models"
    hf_secret, env_secret = info.secrets
    assert hf_secret == "modal.Secret.from_name('my-hf')"
    # Its container imports the app too, so it gets the settings as well.
    assert "PROMPTWIRE_MODAL_EXLLAMA__HF_TOKEN_SECRET" in env_secret


def test_the_image_pins_prebuilt_wheels(default_app: ModuleType) -> None:
    assert default_app.TORCH == "torch==2.7.0"
    assert default_app.TORCH_INDEX_URL.endswith("/cu128")
    assert default_app.EXLLAMAV2_WHEEL.endswith(
        "/v0.3.2/exllamav2-0.3.2+cu128.torch2.7.0-cp311-cp311-linux_x86_64.whl"
    )
    assert default_app.FLASH_ATTN_WHEEL.endswith(
        "flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
    )
    assert default_app.PYTHON_VERSION == "3.11"


class _FakeVolume:
    def __init__(self) -> None:
        self.commits = 0

    def commit(self) -> None:
        self.commits += 1


def test_the_download_function_fills_the_volume_once(
    custom_app: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from promptwire_modal_exllama import weights

    calls: list[dict[str, Any]] = []

    def fake_snapshot(**kwargs: Any) -> str:
        calls.append(kwargs)
        target = Path(kwargs["local_dir"])
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(b"x" * 10)
        return str(target)

    volume = _FakeVolume()
    monkeypatch.setattr(custom_app, "MODELS_MOUNT", PurePosixPath(tmp_path))
    monkeypatch.setattr(custom_app, "volume", volume)
    monkeypatch.setattr(weights, "_hub_snapshot_download", lambda: fake_snapshot)
    monkeypatch.setenv("HF_TOKEN", "hf-secret-value")

    with pytest.warns(UserWarning, match="executing locally"):
        first = custom_app.download_model.local("someone/Model-exl2", "6.0bpw")
    assert first["downloaded"] and first["files"] == 3  # two files plus the marker
    assert first["path"] == str(tmp_path / "someone" / "Model-exl2" / "6.0bpw")
    assert calls[0]["revision"] == "6.0bpw" and calls[0]["token"] == "hf-secret-value"
    assert volume.commits == 1

    with pytest.warns(UserWarning, match="executing locally"):
        again = custom_app.download_model.local("someone/Model-exl2", "6.0bpw")
    assert not again["downloaded"] and len(calls) == 1 and volume.commits == 1
