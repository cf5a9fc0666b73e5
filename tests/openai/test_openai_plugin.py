"""The ``openai`` backend is a plugin like any other: found through its entry point, a client
adapter only (nothing to serve or deploy), left out by ``PROMPTWIRE_LOAD_PLUGINS``."""

from __future__ import annotations

from importlib import metadata

import pytest
from promptwire import ConfigurationError, PromptwireLLM
from promptwire.plugins import get_backend
from promptwire_openai.adapter import OpenAIAdapter
from promptwire_openai.wire import OpenAIWire

from tests.support.installed_plugin import run_cli


def test_found_through_its_entry_point() -> None:
    (entry_point,) = [e for e in metadata.entry_points(group="promptwire") if e.name == "openai"]
    assert entry_point.value == "promptwire_openai.plugin"
    assert entry_point.dist is not None and entry_point.dist.name == "promptwire-openai"
    registered = get_backend("openai")
    assert registered.plugin.distribution == "promptwire-openai"
    backend = registered.backend
    assert isinstance(backend.client, OpenAIAdapter)
    assert backend.create_engine is None and backend.modal_app is None


def test_listed_with_nothing_to_serve_and_refused_for_serve() -> None:
    listed = run_cli("backends", env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if " openai " in f" {line} ")
    assert "promptwire-openai" in line
    served = run_cli("serve", "--backend", "openai", "--port", "0")
    assert served.returncode != 0
    assert "no engine" in served.stderr


def test_the_models_pick_its_wire_format_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_BACKEND", "openai")
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", "http://127.0.0.1:9/v1")
    llm = PromptwireLLM()
    assert isinstance(llm.client.wire, OpenAIWire)
    assert type(PromptwireLLM(backend="modal_dummy").client.wire).__name__ == "PromptProtocol"


def test_left_out_by_the_load_plugins_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cli(
        "invoke",
        "x",
        env={"PROMPTWIRE_LOAD_PLUGINS": "modal_dummy", "PROMPTWIRE_BACKEND": "openai"},
    )
    assert result.returncode != 0
    assert "unknown backend 'openai'" in result.stderr
    with pytest.raises(ConfigurationError):
        get_backend("no_such_backend")
