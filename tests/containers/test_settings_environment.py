"""Settings handed to a Modal container as environment variables build the same settings there."""

from __future__ import annotations

import pytest
from promptwire.settings import settings_environment
from promptwire_modal_dummy.settings import DummySettings
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tests.support.optional import llamacpp_param


def test_the_dummy_settings_survive_the_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = DummySettings(
        api_key_secret="", echo=True, tokens_per_second=None, max_containers=None, reply="a b"
    )
    assert deployed.api_key_secret is None  # empty means an open endpoint
    env = settings_environment(deployed)
    assert env["PROMPTWIRE_MODAL_DUMMY__API_KEY_SECRET"] == "null"
    assert env["PROMPTWIRE_MODAL_DUMMY__ECHO"] == "true"
    for key, value in env.items():
        assert value is not None
        monkeypatch.setenv(key, value)
    assert DummySettings() == deployed


class _Nested(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="T_", env_parse_none_str="null")

    params: dict[str, int] = Field(default_factory=dict)
    names: list[str] = Field(default_factory=list)
    limit: int | None = 3


def test_containers_and_none_are_written_so_pydantic_settings_reads_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed = _Nested(params={"top_k": 40}, names=["a"], limit=None)
    env = settings_environment(deployed, exclude={"names"})
    assert env == {"T_PARAMS": '{"top_k": 40}', "T_LIMIT": "null"}
    for key, value in env.items():
        monkeypatch.setenv(key, value or "")
    assert _Nested().model_dump() == {"params": {"top_k": 40}, "names": [], "limit": None}


def test_none_is_refused_where_the_environment_cannot_say_it() -> None:
    class Plain(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="P_")
        limit: int | None = 3

    with pytest.raises(ValueError, match=r"Plain.limit is None.*env_parse_none_str"):
        settings_environment(Plain(limit=None))


@pytest.mark.parametrize(
    "settings_class",
    [
        "promptwire_modal_dummy.settings.DummySettings",
        llamacpp_param("promptwire_llamacpp.settings.LlamaCppSettings"),
        "promptwire_modal_exllama.settings.ExllamaSettings",
    ],
)
def test_the_scale_out_settings_survive_the_trip(
    monkeypatch: pytest.MonkeyPatch, settings_class: str
) -> None:
    """Regions (a list), a buffer, a target and no container limit (None) are written so that
    the container reads back exactly the settings its function was defined with."""
    import importlib

    module_name, class_name = settings_class.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    deployed = cls(
        region=["eu-west", "us"],
        min_containers=1,
        max_containers=None,
        buffer_containers=2,
        scaledown_window=1200,
        max_inputs=20,
        target_inputs=10,
    )
    env = settings_environment(deployed)
    prefix = cls.model_config["env_prefix"]
    assert env[f"{prefix}REGION"] == '["eu-west", "us"]'
    assert env[f"{prefix}MAX_CONTAINERS"] == "null"
    for key, value in env.items():
        assert value is not None
        monkeypatch.setenv(key, value)
    assert cls() == deployed


def test_the_server_limits_survive_the_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Modal app hands its container for the server (``server_environment``) builds the
    same limits and observability settings there, with no cap on requests in flight unless the
    deploying machine set one."""
    from promptwire.settings import SERVER_LIMIT_FIELDS, PromptwireSettings, server_environment

    fields = {*SERVER_LIMIT_FIELDS, "metrics", "log_format"}
    for limit in (None, 12):
        deployed = PromptwireSettings(
            max_in_flight=limit, send_timeout=3.5, shutdown_grace=0, log_format="json"
        )
        env = server_environment(deployed)
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value or "")
            assert PromptwireSettings().model_dump(include=fields) == deployed.model_dump(
                include=fields
            )
