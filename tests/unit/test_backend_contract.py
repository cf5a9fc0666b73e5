"""The backend contract is typed by its settings class: mypy --strict tells a plugin author when
``create_engine`` does not take what ``settings_class`` makes, including inside the hook's
``register(...)`` call, and a backend without settings needs no annotation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api
from promptwire import Backend, ConfigurationError
from pydantic_settings import BaseSettings

PLUGIN = textwrap.dedent(
    """
    from pydantic_settings import BaseSettings

    from promptwire import Backend, Engine, RegisterBackend, hookimpl


    class MySettings(BaseSettings):
        size: int = 1


    class OtherSettings(BaseSettings):
        colour: str = "red"


    def make(settings: MySettings) -> Engine:
        raise NotImplementedError


    def make_other(settings: OtherSettings) -> Engine:
        raise NotImplementedError


    @hookimpl
    def register_backends(register: RegisterBackend) -> None:
        register(Backend(name="good", settings_class=MySettings, create_engine=make))
        register(Backend(name="bare", create_engine=lambda settings: make(MySettings())))
        register(Backend(name="bad", settings_class=MySettings, create_engine=make_other))  # l. 27
    """
)


def test_mypy_flags_only_the_mismatched_factory(tmp_path: Path) -> None:
    module = tmp_path / "my_plugin.py"
    module.write_text(PLUGIN)
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--config-file", "/dev/null", str(module)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out + err
    assert len(errors) == 1, out
    assert "my_plugin.py:27:" in errors[0] and "create_engine" in errors[0]


def test_a_backend_without_settings_gets_empty_settings() -> None:
    backend: Backend = Backend(name="bare")
    assert type(backend.load_settings()) is BaseSettings
    with pytest.raises(ConfigurationError, match="has no settings; cannot set size"):
        backend.load_settings(size=2)
