"""The user's own httpx clients (``http_client``/``http_async_client``), in process: a real
promptwire app behind ``httpx.ASGITransport``, no socket at all, as a LangChain user tests a chain
against their endpoint. The token the app demands proves promptwire's headers ride on the user's
client; the fields never show in a repr or a serialized model."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_core.load import dumpd, dumps
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.errors import AuthenticationError, InvalidInputError
from promptwire.server import create_app
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

TOKEN = "tok-in-process-5e4d3c"
URL = "http://promptwire.test/"


@pytest.fixture
async def app() -> Any:
    app = create_app(DummyEngine(DummySettings(echo=True)), api_key=TOKEN)
    async with app.router.lifespan_context(app):  # ASGITransport runs no lifespan
        yield app


async def test_both_models_call_an_in_process_app_through_the_users_client(app: Any) -> None:
    seen: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request)

    users = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), event_hooks={"request": [hook]}
    )
    llm = PromptwireLLM(endpoint_url=URL, api_key=TOKEN, http_async_client=users)
    chat = ChatPromptwire(endpoint_url=URL, api_key=TOKEN, http_async_client=users)
    assert await llm.ainvoke("one two three") == "one two three"
    assert "".join([piece async for piece in llm.astream("four five")]) == "four five"
    assert "six seven" in str((await chat.ainvoke("six seven")).content)  # the echoed template
    assert len(seen) == 3  # every request went through the user's client, its hook included
    assert {r.headers["authorization"] for r in seen} == {f"Bearer {TOKEN}"}
    assert {r.headers["user-agent"] for r in seen} == {"promptwire"}
    assert len({r.headers["x-request-id"] for r in seen}) == 3
    assert llm.client.async_client is users

    await llm.aclose()
    assert not users.is_closed  # the user's to close
    await users.aclose()


async def test_promptwires_credentials_and_errors_apply_over_the_users_client(app: Any) -> None:
    users = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        headers={"Authorization": "Bearer not-the-token", "X-Team": "research"},
    )
    with pytest.raises(AuthenticationError, match="HTTP 401"):
        await PromptwireLLM(endpoint_url=URL, http_async_client=users).ainvoke("x")
    # With promptwire's token its header wins; the client's own other headers still go.
    seen: list[httpx.Request] = []
    users.event_hooks["request"] = [_recorder(seen)]
    llm = PromptwireLLM(endpoint_url=URL, api_key=TOKEN, http_async_client=users, max_retries=0)
    assert await llm.ainvoke("ok") == "ok"
    assert seen[-1].headers["x-team"] == "research"
    await users.aclose()


def _recorder(seen: list[httpx.Request]) -> Any:
    async def hook(request: httpx.Request) -> None:
        seen.append(request)

    return hook


@pytest.mark.parametrize("model", [PromptwireLLM, ChatPromptwire])
def test_the_users_clients_are_never_shown_or_serialized(model: Any) -> None:
    secret = "Bearer users-own-secret-91"
    sync_client = httpx.Client(headers={"Authorization": secret})
    async_client = httpx.AsyncClient(headers={"Authorization": secret})
    llm = model(endpoint_url=URL, http_client=sync_client, http_async_client=async_client)
    assert llm.http_client is sync_client and llm.http_async_client is async_client
    shown = [repr(llm), str(llm), dumps(llm), json.dumps(dumpd(llm)), str(llm.model_dump())]
    for text in shown:
        assert "http_client" not in text and "http_async_client" not in text
        assert "users-own-secret" not in text
    assert llm.client.sync_client is sync_client
    sync_client.close()


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "fine " * 3 + "\udc80"])
async def test_text_that_is_not_unicode_is_refused_before_anything_is_sent(
    app: Any, text: str
) -> None:
    """A lone surrogate has no UTF-8 form: the call names where it is, sends nothing and says
    nothing of the text around it; the same model then serves the next prompt."""
    seen: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request)

    users = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), event_hooks={"request": [hook]}
    )
    llm = PromptwireLLM(endpoint_url=URL, api_key=TOKEN, http_async_client=users)
    for call in (llm.ainvoke, lambda prompt: _joined(llm.astream(prompt))):
        with pytest.raises(InvalidInputError) as caught:
            await call(text)
        assert isinstance(caught.value, ValueError)
        message = str(caught.value)
        assert "prompt, at character" in message and "lone surrogate" in message
        assert "fine" not in message
    assert seen == []
    assert await llm.ainvoke("still fine") == "still fine"
    await users.aclose()


async def _joined(pieces: Any) -> str:
    return "".join([piece async for piece in pieces])


def test_the_sync_path_refuses_such_text_too() -> None:
    """Nothing is sent, so the closed port is never tried (a connection error would say so)."""
    llm = PromptwireLLM(endpoint_url="http://127.0.0.1:9/", max_retries=0)
    with pytest.raises(InvalidInputError, match="prompt, at character 2"):
        llm.invoke("ok\ud83d")
    with pytest.raises(InvalidInputError):
        list(llm.stream("ok\ud83d"))
