"""The backend contract at run time: a backend without settings gets empty ones, and a client
adapter typed by other settings than the backend's is refused when the plugin loads (mypy's
half of the contract: tests/typing/test_backend_contract_types.py)."""

from __future__ import annotations

from typing import Any

import pytest
from promptwire import Backend, ClientAdapter, ConfigurationError, PluginError
from pydantic_settings import BaseSettings


class MySettings(BaseSettings):
    size: int = 1


class OtherSettings(BaseSettings):
    colour: str = "red"


class MyAdapter(ClientAdapter[MySettings]):
    def default_params(self, settings: MySettings) -> dict[str, Any]:
        return {"max_tokens": settings.size}


def test_a_backend_without_settings_gets_empty_settings() -> None:
    backend: Backend = Backend(name="bare")
    assert type(backend.load_settings()) is BaseSettings
    with pytest.raises(ConfigurationError, match="has no settings; cannot set size"):
        backend.load_settings(size=2)


def test_a_setting_the_backend_lacks_is_refused_not_dropped() -> None:
    """``promptwire serve --model-dir`` for a backend that loads a file (llamacpp's ``model``)
    was silently ignored: backend settings ignore unknown keys from the environment."""
    backend = Backend(name="sized", settings_class=MySettings)
    with pytest.raises(
        ConfigurationError, match=r"'sized' has no setting model_dir; its settings: size$"
    ):
        backend.load_settings(model_dir="/models/x")
    assert backend.load_settings(size=4).size == 4


def test_an_adapter_gets_its_backends_settings_typed() -> None:
    backend = Backend(name="typed", settings_class=MySettings, client=MyAdapter())
    assert backend.client.default_params(backend.load_settings(size=3)) == {"max_tokens": 3}


@pytest.mark.parametrize("settings_class", [OtherSettings, None])
def test_an_adapter_typed_by_other_settings_is_refused(
    settings_class: type[BaseSettings] | None,
) -> None:
    given = (settings_class or BaseSettings).__name__
    with pytest.raises(PluginError, match=f"MyAdapter reads MySettings, .* is {given}$"):
        Backend(name="worse", settings_class=settings_class, client=MyAdapter())


def test_a_plain_adapter_serves_any_settings() -> None:
    assert Backend(name="plain", settings_class=MySettings, client=ClientAdapter()).client
    assert Backend(name="sub", settings_class=MySettings, client=ClientAdapter[BaseSettings]())
