"""The worked third-party plugin in examples/promptwire-reverse, installed like any distribution:
found through its entry point, configured through its settings, served by ``promptwire serve``,
called by both LangChain models, and passing the conformance kit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.cli import build_app
from promptwire.plugins import get_backends
from promptwire.server import BackgroundServer
from promptwire.settings import PromptwireSettings
from promptwire.testing import EndpointConformanceTests

from tests.support.cli_server import promptwire_serve
from tests.support.installed_plugin import run_cli
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

TOKEN = "reverse-token-42"


@pytest.fixture(scope="module")
def reverse_url() -> Iterator[str]:
    app = build_app("reverse", api_key=None, settings=PromptwireSettings())
    with BackgroundServer(app) as server:
        yield server.url


class TestReverseConformance(EndpointConformanceTests):
    """The tutorial's conformance test: the reverse backend, found through its entry point."""

    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls) -> Iterator[str]:
        app = build_app("reverse", api_key=None, settings=PromptwireSettings())
        with BackgroundServer(app) as server:
            yield server.url


class TestReverseWithTokenConformance(EndpointConformanceTests):
    """The same, behind a bearer token: the kit's auth checks run too."""

    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls) -> Iterator[str]:
        app = build_app("reverse", api_key=TOKEN, settings=PromptwireSettings())
        with BackgroundServer(app) as server:
            yield server.url

    @pytest.fixture
    def api_key(self) -> str:
        return TOKEN


def test_it_is_found_through_its_entry_point() -> None:
    registered = get_backends()["reverse"]
    assert registered.plugin.distribution == "promptwire-reverse"
    assert registered.plugin.name == "reverse"
    assert registered.backend.create_engine is not None
    result = run_cli("backends", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "reverse" in result.stdout and "promptwire-reverse" in result.stdout


def test_llm_whole_stream_and_stop(reverse_url: str) -> None:
    llm = PromptwireLLM(endpoint_url=reverse_url)
    assert llm.invoke("one two three") == "three two one"
    assert list(llm.stream("one two three")) == ["three", " two", " one", ""]
    assert llm.invoke("one two three", stop=[" one"]) == "three two"
    short = PromptwireLLM(endpoint_url=reverse_url, model_kwargs={"max_tokens": 2})
    assert short.invoke("a b c") == "c b"


def test_chat_model_gets_the_engines_own_template(reverse_url: str) -> None:
    chat = ChatPromptwire(endpoint_url=reverse_url)
    reply = chat.invoke(
        [
            SystemMessage("ignored by this template"),
            HumanMessage("first thing said"),
            AIMessage("said first thing"),
            HumanMessage("what comes last"),
        ]
    )
    assert reply.content == "last comes what"
    assert reply.response_metadata["model_name"] == "reverse-1"
    assert reply.usage_metadata == {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}
    assert "".join(str(c.content) for c in chat.stream("a b")) == "b a"


def test_served_by_the_cli_with_its_settings_from_the_environment() -> None:
    env = {"PROMPTWIRE_REVERSE__UPPERCASE": "true", "PROMPTWIRE_REVERSE__MODEL_NAME": "rev-env"}
    with promptwire_serve("--backend", "reverse", env=env) as url:
        reply = httpx.post(url, json={"prompt": "quiet little words"}, timeout=30).json()
    assert reply["prompt"] == "WORDS LITTLE QUIET"
    assert reply["model"] == "rev-env"


# The tutorial's engine tests without HTTP, as it writes them.


def test_words_are_reversed_and_cut_at_max_tokens() -> None:
    from promptwire import FinishReason
    from promptwire.testing import run_engine
    from promptwire_reverse.engine import ReverseEngine

    run = run_engine(ReverseEngine(), {"prompt": "one two three", "max_tokens": 2})
    assert run.pieces == ["three", " two"]
    assert run.finish.finish_reason is FinishReason.LENGTH


def test_settings_reach_the_engine() -> None:
    from promptwire.testing import run_engine
    from promptwire_reverse.engine import ReverseEngine
    from promptwire_reverse.settings import ReverseSettings

    assert run_engine(ReverseEngine(ReverseSettings(uppercase=True)), "a b").text == "B A"


def test_settings_reach_the_kits_app_as_overrides() -> None:
    app = build_app(
        "reverse", api_key=None, settings=PromptwireSettings(), overrides={"uppercase": True}
    )
    with BackgroundServer(app) as server:
        assert httpx.post(server.url, json={"prompt": "a b"}).json()["prompt"] == "B A"
