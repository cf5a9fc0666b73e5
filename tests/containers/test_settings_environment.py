"""Settings handed to a Modal container as environment variables build the same settings there."""

from __future__ import annotations

import pytest
from promptwire.settings import settings_environment
from promptwire_modal_dummy.settings import DummySettings
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
