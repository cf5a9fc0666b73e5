"""The backend contract is typed by its settings class: mypy --strict tells a plugin author when
``create_engine`` or the client adapter does not take what ``settings_class`` makes, including
inside the hook's ``register(...)`` call, and a backend without settings needs no annotation.

These run mypy itself (seconds each), so they live apart from the unit tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api as mypy_api

PLUGIN = textwrap.dedent(
    """
    from typing import Any

    from pydantic_settings import BaseSettings

    from promptwire import Backend, ClientAdapter, Engine, RegisterBackend, hookimpl


    class MySettings(BaseSettings):
        size: int = 1


    class OtherSettings(BaseSettings):
        colour: str = "red"


    class MyAdapter(ClientAdapter[MySettings]):
        def default_params(self, settings: MySettings) -> dict[str, Any]:
            return {"max_tokens": settings.size}  # no isinstance: the type says it


    def make(settings: MySettings) -> Engine:
        raise NotImplementedError


    def make_other(settings: OtherSettings) -> Engine:
        raise NotImplementedError


    @hookimpl
    def register_backends(register: RegisterBackend) -> None:
        register(Backend(name="good", settings_class=MySettings, create_engine=make))
        register(Backend(name="bare", create_engine=lambda settings: make(MySettings())))
        register(Backend(name="typed", settings_class=MySettings, client=MyAdapter()))
        register(Backend(name="bad", settings_class=MySettings, create_engine=make_other))  # l. 35
        register(WORSE)


    # Inside register(...) mypy cannot tell this conflict from a failed inference and says
    # nothing (Backend then refuses it when the plugin loads); standing alone it is flagged.
    WORSE = Backend(name="worse", settings_class=OtherSettings, client=MyAdapter())  # l. 41
    """
)


def test_mypy_flags_only_the_mismatched_factory_and_adapter(tmp_path: Path) -> None:
    module = tmp_path / "my_plugin.py"
    module.write_text(PLUGIN)
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--config-file", "/dev/null", str(module)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out + err
    assert len(errors) == 2, out
    assert "my_plugin.py:35:" in errors[0] and "create_engine" in errors[0]
    assert "my_plugin.py:41:" in errors[1] and "SettingsT" in errors[1]
