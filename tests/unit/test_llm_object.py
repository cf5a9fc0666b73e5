"""The LLM objects themselves: fields, LangChain metadata, serialization without secrets."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from typing import Any

import httpx
import pytest
from langchain_core.load import dumpd, dumps, loads
from promptwire import ChatPromptwire, ConfigurationError, Modal, PromptwireLLM
from promptwire.client import ClientConfig, EndpointClient
from promptwire.langchain._endpoint_model import FROM_SETTINGS
from promptwire.settings import ConnectionSettings, PromptwireSettings
from pydantic import BaseModel, SecretStr, ValidationError

SECRET = "sk-do-not-leak-7f3a"


def test_identifying_params_and_type() -> None:
    llm = PromptwireLLM(endpoint_url="http://x/", model_kwargs={"max_tokens": 3})
    assert llm._llm_type == "promptwire"
    assert llm._identifying_params == {
        "endpoint_url": "http://x/",
        "backend": None,
        "model_kwargs": {"max_tokens": 3},
    }
    assert (
        PromptwireLLM(endpoint_url="http://x/", temperature=0.5)._identifying_params["temperature"]
        == 0.5
    )


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


@pytest.mark.parametrize(
    "make",
    [
        lambda: PromptwireLLM(api_key=SECRET, temperature=0.1, model_kwargs={"temperature": 0.2}),
        lambda: ChatPromptwire(api_key=SECRET, max_tokens=0),
        lambda: PromptwireLLM(api_key=[SECRET]),
        lambda: Modal(endpoint_url="http://x/", modal_secret=SECRET, timeout="soon"),
    ],
)
def test_a_validation_error_shows_no_secret(make: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        make()
    # What a traceback or a log line shows (``errors()`` keeps the input, for code to read).
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


@pytest.mark.parametrize("kind", [PromptwireLLM, ChatPromptwire, Modal])
def test_a_copy_or_a_pickle_opens_connections_of_its_own(kind: type[PromptwireLLM]) -> None:
    """A used model (its pools hold locks and sockets) pickles for a process pool and deep-
    copies; the copy makes its own client, with the same settings."""
    model = kind(endpoint_url="http://x/", api_key=SECRET, temperature=0.5)
    used = model.client
    for copied in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert copied.client is not used and copied.client is copied.client
        assert copied.api_key == model.api_key and copied.temperature == 0.5


def test_a_model_given_an_httpx_client_shares_it_in_a_copy_and_does_not_pickle() -> None:
    given = httpx.Client()
    model = PromptwireLLM(endpoint_url="http://x/", http_client=given)
    assert copy.deepcopy(model).http_client is given  # the caller's, not copied
    with pytest.raises(TypeError, match="make it where it is used"):
        pickle.dumps(model)
    given.close()


def test_the_pooled_client_sends_bearer_and_modal_proxy_headers() -> None:
    llm = PromptwireLLM(endpoint_url="http://x/", api_key=SECRET, modal_key="mk", modal_secret="ms")
    headers = llm.client.sync_client.headers
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert (headers["modal-key"], headers["modal-secret"]) == ("mk", "ms")
    assert llm.client.sync_client is llm.client.sync_client  # one pool per object
    llm.close()


def test_modal_dropin_keeps_the_url_and_moves_extras_to_model_kwargs() -> None:
    llm = Modal(
        endpoint_url="https://ecorp--custom-llm-endpoint.modal.run", temperature=0.2, custom="x"
    )
    assert llm.endpoint_url == "https://ecorp--custom-llm-endpoint.modal.run"
    assert llm.model_kwargs == {"custom": "x"}
    assert llm.temperature == 0.2  # a generation field of every promptwire model
    assert llm._payload("p", None, {}) == {"prompt": "p", "temperature": 0.2, "custom": "x"}
    assert llm._llm_type == "modal"
    with pytest.raises(ValueError, match="supplied twice"):
        Modal(endpoint_url="http://x/", model_kwargs={"top_k": 1}, top_k=2)


def test_unknown_fields_are_refused_by_the_strict_class() -> None:
    with pytest.raises(ValueError, match="temprature"):
        PromptwireLLM(endpoint_url="http://x/", temprature=0.1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://host/",
        "http://[::1",
        "http://",
        "",
        "host:8000/path",
        "http://127.0.0.1:99999/",  # httpx takes these; the call then fails as if the server
        "http://exa mple.com/",  # were down or unknown
    ],
)
def test_a_malformed_endpoint_url_is_refused_when_the_model_is_made(url: str) -> None:
    for model in (PromptwireLLM, ChatPromptwire):
        with pytest.raises(ConfigurationError, match="endpoint URL"):
            model(endpoint_url=url)
    with pytest.raises(ConfigurationError, match="endpoint URL"):
        EndpointClient(ClientConfig(endpoint_url=url))


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
        jar = llm.client.async_client.cookies
        jar.set("session", "abc")
        return jar

    assert not asyncio.run(async_cookies())
    llm.close()


MODELS = [PromptwireLLM, ChatPromptwire]
BAD_ARGUMENTS = [
    ("timeout", 0),
    ("timeout", -5),
    ("timeout", float("nan")),
    ("connect_timeout", 0),
    ("max_retries", -3),
    ("max_retries", 21),
    ("max_concurrency", 0),
    ("max_tokens", 0),
    ("temperature", -0.1),
    ("temperature", 11),
    ("top_p", 0),
    ("top_k", -1),
    ("seed", -1),
    ("stop", [""]),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("field", "value"), BAD_ARGUMENTS)
def test_explicit_arguments_are_checked_like_the_environment(
    model: type[PromptwireLLM | ChatPromptwire], field: str, value: Any
) -> None:
    """``timeout=0`` ran with 600 s, and negative values went straight to httpx and tenacity."""
    with pytest.raises(ValidationError) as caught:
        model(endpoint_url="http://x/", **{field: value})
    assert caught.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(("field", "value"), [b for b in BAD_ARGUMENTS if b[0] in FROM_SETTINGS])
def test_the_same_values_from_the_environment_are_refused_too(
    monkeypatch: pytest.MonkeyPatch, field: str, value: Any
) -> None:
    monkeypatch.setenv(f"PROMPTWIRE_{field.upper()}", str(value))
    with pytest.raises(ValidationError) as caught:
        PromptwireLLM(endpoint_url="http://x/")
    assert field in str(caught.value)


@pytest.mark.parametrize("model", MODELS)
def test_explicit_settings_reach_the_client(model: type[PromptwireLLM | ChatPromptwire]) -> None:
    made = model(endpoint_url="http://x/", timeout=0.5, connect_timeout=0.25, max_retries=0)
    config = made.client.config
    assert (config.timeout, config.connect_timeout, config.max_retries) == (0.5, 0.25, 0)


GENERATION = {"max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "top_k": 3, "seed": 7}


@pytest.mark.parametrize("model", MODELS)
def test_both_models_take_the_same_generation_fields(
    model: type[PromptwireLLM | ChatPromptwire],
) -> None:
    made = model(endpoint_url="http://x/", stop=["END"], **GENERATION)  # type: ignore[arg-type]
    assert made._generation_params() == GENERATION
    assert made._stops(None) == ["END"] and made._stops(["X"]) == ["X"]


def round_trip(made: Any) -> Any:
    return loads(
        dumps(made),
        allowed_objects=[type(made)],
        valid_namespaces=["promptwire"],
        secrets_map={"PROMPTWIRE_API_KEY": SECRET, "PROMPTWIRE_MODAL_KEY": "mk"},
    )


@pytest.mark.parametrize("model", [PromptwireLLM, ChatPromptwire, Modal])
def test_dumps_then_loads_gives_the_same_model(model: type[PromptwireLLM]) -> None:
    """``is_lc_serializable()`` said True, yet ``loads`` could not import the class back."""
    made = model(
        endpoint_url="http://x/",
        api_key=SECRET,
        modal_key="mk",
        timeout=5,
        model_kwargs={"custom": 1},
        **GENERATION,  # type: ignore[arg-type]
    )
    loaded = round_trip(made)
    assert type(loaded) is model
    assert loaded.model_dump() == made.model_dump()
    assert loaded.api_key.get_secret_value() == SECRET
    assert SECRET not in dumps(made)


def test_the_llm_reports_tracing_params_as_the_chat_model_does() -> None:
    """LangSmith showed the LLM's provider as the class name and no model or parameters."""
    llm = PromptwireLLM(endpoint_url="http://x/", temperature=0.3, max_tokens=9, stop=["END"])
    assert llm._get_ls_params() == {
        "ls_provider": "promptwire",
        "ls_model_name": "promptwire",
        "ls_model_type": "llm",
        "ls_temperature": 0.3,
        "ls_max_tokens": 9,
        "ls_stop": ["END"],
    }
    assert llm._get_ls_params(stop=["X"], temperature=0.9)["ls_stop"] == ["X"]
    assert llm._get_ls_params(temperature=0.9)["ls_temperature"] == 0.9
    chat = ChatPromptwire(endpoint_url="http://x/", model="llama", temperature=0.3)
    assert chat._get_ls_params()["ls_model_name"] == "llama"
    assert chat._get_ls_params()["ls_model_type"] == "chat"


@pytest.mark.parametrize("cls", [PromptwireLLM, ChatPromptwire, PromptwireSettings, ClientConfig])
def test_connection_fields_are_declared_once(cls: type[BaseModel]) -> None:
    """Each has ConnectionSettings' fields, with its types, checks and defaults (inherited)."""
    for name, field in ConnectionSettings.model_fields.items():
        assert repr(cls.model_fields[name]) == repr(field), (cls, name)


def test_every_connection_field_reaches_the_client_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = {
        "endpoint_url": "http://env-host:1234/",
        "timeout": "7.5",
        "connect_timeout": "3",
        "max_retries": "5",
        "retry_unsafe": "true",
        "max_concurrency": "300",
        "max_reply_bytes": "4096",
        "api_key": "tok",
        "modal_key": "mk",
        "modal_secret": "ms",
    }
    assert set(given) == set(ConnectionSettings.model_fields)
    for name, value in given.items():
        monkeypatch.setenv(f"PROMPTWIRE_{name.upper()}", value)
    config = PromptwireLLM(max_retries=1).client.config
    shown = config.model_dump(include=set(given))
    for name in ("api_key", "modal_key", "modal_secret"):
        shown[name] = shown[name].get_secret_value()
    expected = ConnectionSettings.model_validate(given).model_dump()
    for name in ("api_key", "modal_key", "modal_secret"):
        expected[name] = expected[name].get_secret_value()
    assert shown == {**expected, "max_retries": 1}  # an argument beats the environment
    assert config.max_connections == 300
    assert config.request_headers()["Modal-Key"] == "mk"
