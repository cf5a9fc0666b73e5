"""The server's limits are declared once (``ServerLimits``): ``create_app`` takes them whole or
one by one, ``promptwire serve`` passes its settings, and what a deploying machine sets is
written for a Modal container's environment and read back there unchanged."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx
import pytest
from promptwire import Engine, EngineEvent, Finish, FinishReason, PromptRequest, TextChunk, Usage
from promptwire.server import LimitArguments, create_app, graceful_shutdown
from promptwire.settings import (
    SERVER_LIMIT_FIELDS,
    PromptwireSettings,
    ServerLimits,
    limits_environment,
    server_environment,
)
from pydantic import ValidationError

SET = {
    "PROMPTWIRE_MAX_BODY_BYTES": "4096",
    "PROMPTWIRE_MAX_IN_FLIGHT": "3",
    "PROMPTWIRE_BODY_TIMEOUT": "7.5",
    "PROMPTWIRE_SEND_TIMEOUT": "11",
    "PROMPTWIRE_SHUTDOWN_GRACE": "2",
}
AS_SET = ServerLimits(
    max_body_bytes=4096, max_in_flight=3, body_timeout=7.5, send_timeout=11, shutdown_grace=2
)


class OkEngine(Engine):
    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        yield TextChunk("ok")
        yield Finish(FinishReason.STOP, Usage(prompt_tokens=1, completion_tokens=1))


def test_the_single_limits_are_the_declared_ones() -> None:
    assert tuple(LimitArguments.__annotations__) == SERVER_LIMIT_FIELDS
    assert set(SERVER_LIMIT_FIELDS) <= set(PromptwireSettings.model_fields)


def test_an_app_has_the_limits_it_was_given() -> None:
    assert create_app(OkEngine()).state.limits == ServerLimits()
    app = create_app(OkEngine(), limits=AS_SET)
    assert app.state.limits == AS_SET
    shutdown = graceful_shutdown(app)
    assert shutdown is not None and shutdown.grace == 2
    # One limit given by name beats the same one in ``limits``; the others stay.
    app = create_app(OkEngine(), limits=AS_SET, max_in_flight=9, send_timeout=None)
    assert app.state.limits == AS_SET.model_copy(update={"max_in_flight": 9, "send_timeout": None})
    assert create_app(OkEngine(), body_timeout=1.0).state.limits.body_timeout == 1.0


@pytest.mark.parametrize(
    "bad",
    [{"max_in_flight": 0}, {"body_timeout": 0}, {"max_body_bytes": 10}, {"shutdown_grace": -1}],
)
def test_a_limit_out_of_range_is_refused_when_the_app_is_made(bad: LimitArguments) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        create_app(OkEngine(), **bad)


async def test_the_app_enforces_the_limits_it_was_given() -> None:
    app = create_app(OkEngine(), limits=ServerLimits(max_body_bytes=1024))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.post("/", json={"prompt": "x"})).status_code == 200
            large = await client.post("/", json={"prompt": "x" * 2000})
            assert large.status_code == 413


def test_serve_builds_its_app_with_the_environments_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from promptwire.cli import build_app

    for name, value in SET.items():
        monkeypatch.setenv(name, value)
    settings = PromptwireSettings()
    app = build_app("modal_dummy", api_key=None, settings=settings)
    assert app.state.limits == AS_SET


def test_the_limits_reach_a_container_environment_and_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a Modal app hands its container (``env=``) builds the same limits there, from that
    environment alone."""
    for name, value in SET.items():
        monkeypatch.setenv(name, value)
    env = limits_environment()
    assert set(env) == set(SET)
    for name in SET:
        monkeypatch.delenv(name)
    assert ServerLimits.model_validate(PromptwireSettings().model_dump()) != AS_SET
    for name, value in env.items():
        monkeypatch.setenv(name, value or "")
    read_back = PromptwireSettings().model_dump(include=set(SERVER_LIMIT_FIELDS))
    assert ServerLimits.model_validate(read_back) == AS_SET


def test_an_unset_cap_is_left_out_and_the_key_never_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_API_KEY", "never-in-a-container-env")
    env = server_environment()
    assert "PROMPTWIRE_MAX_IN_FLIGHT" not in env  # None: the container's default is None too
    assert "PROMPTWIRE_API_KEY" not in env
    assert "never-in-a-container-env" not in repr(env)
    assert {"PROMPTWIRE_SEND_TIMEOUT", "PROMPTWIRE_METRICS"} <= set(env)


def test_a_none_the_environment_cannot_say_is_refused() -> None:
    settings = PromptwireSettings(send_timeout=None)
    with pytest.raises(ValueError, match="send_timeout is None"):
        limits_environment(settings)
