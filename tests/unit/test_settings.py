"""Settings precedence: explicit arguments, then the environment, then .env, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from promptwire import ConfigurationError, PromptwireLLM
from promptwire.settings import DEFAULT_ENDPOINT_URL, PromptwireSettings
from promptwire_modal_dummy.settings import DummySettings


def test_defaults_point_at_the_local_server() -> None:
    settings = PromptwireSettings()
    assert settings.endpoint_url == DEFAULT_ENDPOINT_URL == "http://127.0.0.1:8000/"
    assert settings.backend is None and settings.api_key is None


def test_environment_beats_dotenv_beats_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("PROMPTWIRE_ENDPOINT_URL=http://from-dotenv/\nPROMPTWIRE_TIMEOUT=7\n")
    assert PromptwireSettings().endpoint_url == "http://from-dotenv/"
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", "http://from-env/")
    settings = PromptwireSettings()
    assert settings.endpoint_url == "http://from-env/"
    assert settings.timeout == 7.0


def test_explicit_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", "http://from-env/")
    monkeypatch.setenv("PROMPTWIRE_MAX_RETRIES", "5")
    llm = PromptwireLLM(endpoint_url="http://explicit/", max_retries=0)
    assert llm.endpoint_url == "http://explicit/"
    assert llm.max_retries == 0
    assert PromptwireLLM().endpoint_url == "http://from-env/"


def test_api_key_from_the_environment_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_API_KEY", "sk-env-secret-123")
    llm = PromptwireLLM()
    assert llm.api_key is not None
    assert llm.api_key.get_secret_value() == "sk-env-secret-123"
    assert "sk-env-secret-123" not in repr(llm)


def test_an_empty_secret_is_none_for_the_client_as_for_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMPTWIRE_API_KEY", "")  # a shared .env's "PROMPTWIRE_API_KEY="
    assert PromptwireSettings().api_key is None  # the server then serves without auth
    assert PromptwireLLM(endpoint_url="http://x/").api_key is None  # was refused
    assert PromptwireLLM(endpoint_url="http://x/", modal_key="").modal_key is None


def test_backend_settings_nest_under_the_backend_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_MODAL_DUMMY__REPLY", "howdy")
    monkeypatch.setenv("PROMPTWIRE_MODAL_DUMMY__FIRST_TOKEN_DELAY", "0.25")
    settings = DummySettings()
    assert (settings.reply, settings.first_token_delay) == ("howdy", 0.25)
    assert DummySettings(reply="explicit").reply == "explicit"


def test_a_bad_value_in_the_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="timeout"):
        PromptwireSettings()


def test_an_unknown_backend_names_the_installed_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"installed backends: .*modal_dummy"):
        PromptwireLLM(backend="no_such_backend")


@pytest.mark.parametrize(
    ("value", "says"),
    [("[not json", "not JSON"), ("", "not JSON"), ("[" * 3000 + "]" * 3000, "nested too deeply")],
    ids=["not-json", "empty", "deep"],
)
def test_a_value_the_environment_cannot_say_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    """What pydantic-settings cannot read (its ``SettingsError``; Python's ``RecursionError``
    for JSON nested past its limit, which nothing else turns into a message) is one
    ``ConfigurationError`` naming the variables, for a library caller as for the CLI."""
    monkeypatch.setenv("PROMPTWIRE_BACKEND", "router")
    monkeypatch.setenv("PROMPTWIRE_ROUTER__ENDPOINTS", value)
    with pytest.raises(ConfigurationError, match=f"PROMPTWIRE_ROUTER__.*{says}") as caught:
        PromptwireLLM()
    assert "\n" not in str(caught.value)
