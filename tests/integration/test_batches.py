"""A batch gives one result per input, in order: its answer, or with ``return_exceptions`` its own
typed error, for ``PromptwireLLM`` and ``ChatPromptwire`` alike, sync and async, on one server
and over a router with a failing member.

Before, ``PromptwireLLM.batch``/``abatch`` (LangChain's ``BaseLLM.batch``) returned the one
failure for every prompt: 8 prompts of which the server refused one came back as 8 copies of the
same 422 although 7 were answered; over a router with a failing member, 40 copies of one error,
the prompts a healthy member had answered included. A caller retrying the "failed" ones ran
answered prompts twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from promptwire import ChatPromptwire, InvalidRequestError, PromptwireLLM, ServerError
from promptwire.engine import EngineError, EngineEvent
from promptwire.errors import HTTPStatusError
from promptwire.protocol import PromptRequest
from promptwire.router import member_counts, routed
from promptwire_modal_dummy.settings import DummySettings

from tests.support.engines import REFUSE, ObservedEngine, RefusingEngine
from tests.support.servers import serve_engine

Model = type[PromptwireLLM] | type[ChatPromptwire]
MODELS = [PromptwireLLM, ChatPromptwire]


@pytest.fixture(scope="module")
def refusing() -> Iterator[tuple[RefusingEngine, str]]:
    """An echo server that refuses (422) each prompt holding ``REFUSE``, slowly enough that a
    batch's prompts are in flight together."""
    engine = RefusingEngine(DummySettings(echo=True, first_token_delay=0.05))
    with serve_engine(engine) as server:
        yield engine, server.url


def _text(result: Any) -> Any:
    """The prompt an echoed result holds (the dummy engine echoes a conversation as its plain
    template renders it: ``User: <prompt>``, then the assistant's turn); an error as it is."""
    if isinstance(result, BaseMessage):
        return str(result.content).removeprefix("User: ").partition("\n")[0]
    return result


def _prompts(count: int, refused: set[int]) -> list[str]:
    return [f"{REFUSE} p{i}" if i in refused else f"p{i}" for i in range(count)]


def _assert_each_its_own(prompts: list[str], results: list[Any], error: type[Exception]) -> None:
    """Each answered prompt its answer (the echo), each refused one its own error."""
    assert len(results) == len(prompts)
    errors = []
    for prompt, result in zip(prompts, results, strict=True):
        if REFUSE in prompt:
            assert isinstance(result, error), result
            errors.append(result)
        else:
            assert _text(result) == prompt, result
    assert len({id(e) for e in errors}) == len(errors), "one exception object for several"
    ids = [e.request_id for e in errors if isinstance(e, HTTPStatusError)]
    assert len(ids) == len(errors) and None not in ids and len(set(ids)) == len(ids), ids


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("run", ["batch", "abatch"])
def test_a_refused_prompt_is_its_own_error_and_the_others_are_answered(
    refusing: tuple[RefusingEngine, str], model: Model, run: str
) -> None:
    engine, url = refusing
    prompts = _prompts(8, {3})
    llm = model(endpoint_url=url, max_concurrency=4, max_retries=0)
    seen = len(engine.requests)
    if run == "batch":
        results = llm.batch(prompts, return_exceptions=True)  # type: ignore[arg-type]
    else:
        results = asyncio.run(llm.abatch(prompts, return_exceptions=True))  # type: ignore[arg-type]
    _assert_each_its_own(prompts, results, InvalidRequestError)
    assert len(engine.requests) - seen == 7  # each answered prompt ran once, none twice


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_several_refused_prompts_each_keep_their_own_error_under_a_config_limit(
    refusing: tuple[RefusingEngine, str], model: Model
) -> None:
    """With the config's ``max_concurrency`` (LangChain's base class cut the batch into waves
    and returned one failure for its whole wave)."""
    _, url = refusing
    prompts = _prompts(12, {0, 5, 11})
    llm = model(endpoint_url=url, max_concurrency=8, max_retries=0)
    config = {"max_concurrency": 3}
    results = llm.batch(prompts, config=config, return_exceptions=True)  # type: ignore[arg-type]
    _assert_each_its_own(prompts, results, InvalidRequestError)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_without_return_exceptions_a_refusal_is_raised(
    refusing: tuple[RefusingEngine, str], model: Model
) -> None:
    _, url = refusing
    llm = model(endpoint_url=url, max_concurrency=4, max_retries=0)
    with pytest.raises(InvalidRequestError):
        llm.batch(_prompts(6, {2}))  # type: ignore[arg-type]


class _BrokenEngine(ObservedEngine):
    """A member whose engine fails every request (500 ``server_error``)."""

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        self.requests.append(request)
        raise EngineError("the device fell over")
        yield  # an async generator all the same


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("run", ["batch", "abatch"])
def test_over_a_router_every_prompt_a_healthy_member_answered_comes_back(
    model: Model, run: str
) -> None:
    broken = _BrokenEngine()
    healthy = ObservedEngine(DummySettings(echo=True, first_token_delay=0.02))
    with serve_engine(broken) as bad, serve_engine(healthy) as good:
        # Many failures allowed: the broken member stays in the rotation for the whole batch.
        llm = routed(model, [bad.url, good.url], failures=1000, max_concurrency=8, max_retries=0)
        prompts = [f"p{i}" for i in range(40)]
        if run == "batch":
            results = llm.batch(prompts, return_exceptions=True)  # type: ignore[arg-type]
        else:
            results = asyncio.run(llm.abatch(prompts, return_exceptions=True))  # type: ignore[arg-type]
        served = {row["endpoint"]: row["served"] for row in member_counts(llm)}
    errors = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(e, ServerError) for e in errors), errors
    answers = [(p, _text(r)) for p, r in zip(prompts, results, strict=True) if r not in errors]
    assert all(text == prompt for prompt, text in answers), answers
    # Every prompt the healthy member answered came back as its answer, each failure is the
    # broken member's own, once per prompt it failed, with its own request id.
    assert len(answers) == len(healthy.requests) == served[good.url] > 0
    assert len(errors) == len(broken.requests) > 0
    ids = [e.request_id for e in errors if isinstance(e, ServerError)]
    assert None not in ids and len(set(ids)) == len(errors)
