"""The LLM objects themselves: fields, LangChain metadata, serialization without secrets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.load import dumpd, dumps
from promptwire import ChatPromptwire, ConfigurationError, Modal, PromptwireLLM
from promptwire.client import ClientConfig, EndpointClient
from pydantic import SecretStr

SECRET = "sk-do-not-leak-7f3a"


def test_identifying_params_and_type() -> None:
    llm = PromptwireLLM(endpoint_url="http://x/", model_kwargs={"max_tokens": 3})
    assert llm._llm_type == "promptwire"
    assert llm._identifying_params == {
        "endpoint_url": "http://x/",
        "backend": None,
        "model_kwargs": {"max_tokens": 3},
    }


def test_secrets_never_serialized_or_shown() -> None:
    llm = PromptwireLLM(
        endpoint_url="http://x/",
        api_key=SecretStr(SECRET),
        modal_key=SecretStr(SECRET + "k"),
        modal_secret=SECRET + "s",  # a plain string is wrapped too
    )
    assert isinstance(llm.modal_secret, SecretStr)
    for text in (repr(llm), str(llm), json.dumps(dumpd(llm)), dumps(llm), repr(llm.client)):
        assert SECRET not in text
    assert dumpd(llm)["kwargs"]["api_key"] == {
        "lc": 1,
        "type": "secret",
        "id": ["PROMPTWIRE_API_KEY"],
    }


def test_the_pooled_client_sends_bearer_and_modal_proxy_headers() -> None:
    llm = PromptwireLLM(endpoint_url="http://x/", api_key=SECRET, modal_key="mk", modal_secret="ms")
    headers = llm.client.sync_client.headers
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert (headers["modal-key"], headers["modal-secret"]) == ("mk", "ms")
    assert llm.client.sync_client is llm.client.sync_client  # one pool per object
    llm.close()


def test_modal_dropin_keeps_the_url_and_moves_extras_to_model_kwargs() -> None:
    llm = Modal(endpoint_url="https://ecorp--custom-llm-endpoint.modal.run", temperature=0.2)
    assert llm.endpoint_url == "https://ecorp--custom-llm-endpoint.modal.run"
    assert llm.model_kwargs == {"temperature": 0.2}
    assert llm._llm_type == "modal"
    with pytest.raises(ValueError, match="supplied twice"):
        Modal(endpoint_url="http://x/", model_kwargs={"top_k": 1}, top_k=2)


def test_unknown_fields_are_refused_by_the_strict_class() -> None:
    with pytest.raises(ValueError, match="temprature"):
        PromptwireLLM(endpoint_url="http://x/", temprature=0.1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://host/", "http://[::1", "http://", "", "host:8000/path"]
)
def test_a_malformed_endpoint_url_is_refused_when_the_model_is_made(url: str) -> None:
    for model in (PromptwireLLM, ChatPromptwire):
        with pytest.raises(ConfigurationError, match="endpoint URL"):
            model(endpoint_url=url)
    with pytest.raises(ConfigurationError, match="endpoint URL"):
        EndpointClient(ClientConfig(url=url))


@pytest.mark.parametrize(
    "url", ["https://user:hunter2@host/", "https://hunter2@host/", "https://u:hunter2@host:x/"]
)
def test_credentials_in_the_url_are_refused_without_being_shown(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        PromptwireLLM(endpoint_url=url)
    assert "hunter2" not in str(caught.value) and "***@host" in str(caught.value)


def test_a_url_set_after_construction_is_checked_at_first_use() -> None:
    llm = PromptwireLLM(endpoint_url="http://x/")
    llm.endpoint_url = "x"
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        llm.invoke("hi")


def test_the_pools_store_no_cookie_even_when_asked() -> None:
    llm = PromptwireLLM(endpoint_url="http://x/")
    jar = llm.client.sync_client.cookies
    jar.set("session", "abc")
    jar.update({"other": "1"})
    assert not llm.client.sync_client.cookies

    async def async_cookies() -> Any:
        return llm.client.async_client.cookies

    assert not asyncio.run(async_cookies())
    with pytest.raises(AttributeError, match="no cookies"):
        llm.client.sync_client.cookies = {"session": "abc"}
    llm.close()
