"""The plugin as installed: registration, cheap imports, its CLI commands, its client adapter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from promptwire.errors import ConfigurationError
from promptwire.plugins import get_backend
from promptwire_modal_exllama.client import ExllamaClient
from promptwire_modal_exllama.runtime import check_serveable
from promptwire_modal_exllama.settings import ExllamaSettings

from tests.support.installed_plugin import run_cli

HEAVY = (
    "modal",
    "torch",
    "exllamav2",
    "flash_attn",
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "opentelemetry.instrumentation",  # langsmith imports opentelemetry itself when installed
)


def test_the_backend_is_registered_through_its_entry_point() -> None:
    registered = get_backend("modal_exllama")
    backend = registered.backend
    assert registered.plugin.distribution == "promptwire-modal-exllama"
    assert backend.settings_class is ExllamaSettings
    assert isinstance(backend.client, ExllamaClient)
    assert backend.create_engine is not None
    assert backend.modal_app == "promptwire_modal_exllama.modal_app"


def test_the_client_path_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from promptwire import PromptwireLLM\n"
        "llm = PromptwireLLM(backend='modal_exllama', endpoint_url='http://127.0.0.1:9/')\n"
        "from promptwire.plugins import get_backend\n"
        "get_backend('modal_exllama').backend.create_engine\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""


def test_creating_the_engine_imports_no_gpu_library(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    code = (
        "import sys\n"
        "from promptwire.errors import ConfigurationError\n"
        "from promptwire.plugins import get_backend\n"
        "backend = get_backend('modal_exllama').backend\n"
        "try:\n"
        f"    engine = backend.create_engine(backend.load_settings(model_dir={str(tmp_path)!r}))\n"
        "    print('created', engine.ready)\n"
        "except ConfigurationError as exc:\n"
        "    print('refused', 'not installed' in str(exc))\n"
        "print('torch' in sys.modules, 'exllamav2' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    first, second = result.stdout.splitlines()
    assert first in ("created False", "refused True")
    assert second == "False False"


@pytest.mark.parametrize(
    ("model_dir", "message"),
    [(None, "needs a model directory"), ("/nowhere/at/all", "is not a model directory")],
)
def test_a_missing_model_is_refused_before_serving(model_dir: str | None, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_serveable(ExllamaSettings(model_dir=model_dir))


def test_the_cli_has_the_download_command() -> None:
    result = run_cli("exllama", "download", "--help")
    assert result.returncode == 0, result.stderr
    assert "Volume" in result.stdout and "--revision" in result.stdout


def test_serving_a_missing_model_directory_fails_with_one_clear_line() -> None:
    result = run_cli(
        "serve", "--backend", "modal_exllama", "--model-dir", "/nowhere/at/all", "--port", "0"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "/nowhere/at/all is not a model directory" in result.stderr


def test_the_adapter_sends_configured_parameters() -> None:
    adapter = ExllamaClient()
    assert adapter.default_params(ExllamaSettings()) == {}
    settings = ExllamaSettings(request_params={"top_k": 40, "stream": True, "prompt": "x"})
    assert adapter.default_params(settings) == {"top_k": 40}
    assert adapter.headers(settings) == {}


def test_the_adapter_refuses_bad_parameters_up_front() -> None:
    with pytest.raises(ConfigurationError, match="top_k"):
        ExllamaClient().default_params(ExllamaSettings(request_params={"top_k": "many"}))
