"""ChatPromptwire's tool calling and structured output against real servers on 127.0.0.1: the
dummy engine in tool mode, through the prompt protocol (v1.2) and through the ``openai`` backend
(promptwire's own ``/v1``), sync and async, whole and streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Literal, TypedDict

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from promptwire import (
    ChatPromptwire,
    EndpointConnectError,
    InvalidRequestError,
    OverloadedError,
    UnsupportedFeatureError,
)
from promptwire.engine import Engine, EngineEvent, Finish, ToolCall
from promptwire.protocol import Capabilities, FinishReason, PromptRequest, Usage
from promptwire.server import create_app
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_asgi, serve_engine

pytestmark = LOOPBACK_ONLY


@tool
def get_weather(city: str, days: int = 1) -> str:
    """The weather forecast for a city."""
    return f"Sunny in {city} for {days} days"


class Forecast(BaseModel):
    """A weather forecast."""

    city: str = Field(min_length=1)
    days: int = Field(ge=1, le=7)
    unit: Literal["celsius", "fahrenheit"]


class Movie(TypedDict):
    """A film."""

    title: str
    year: int


MOVIE_SCHEMA = {
    "title": "movie",
    "description": "A film.",
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer", "minimum": 1900}},
    "required": ["title", "year"],
}


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


WIRES = ["prompt-protocol", "openai"]


def _chat(url: str, wire: str, **options: Any) -> ChatPromptwire:
    if wire == "openai":
        return ChatPromptwire(
            endpoint_url=url + "v1", backend="openai", timeout=30, max_retries=0, **options
        )
    return ChatPromptwire(endpoint_url=url, timeout=30, max_retries=0, **options)


@pytest.fixture(params=WIRES)
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- bind_tools ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool_like", "name"),
    [
        (get_weather, "get_weather"),
        (Forecast, "Forecast"),
        (multiply, "multiply"),
        (Movie, "Movie"),
        (
            {
                "type": "function",
                "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
            },
            "lookup",
        ),
    ],
    ids=["langchain-tool", "pydantic", "function", "typeddict", "openai-dict"],
)
def test_bind_tools_sends_every_kind_of_tool_and_reads_the_call(
    tool_server: tuple[ObservedEngine, str], wire: str, tool_like: Any, name: str
) -> None:
    engine, url = tool_server
    message = _chat(url, wire).bind_tools([tool_like]).invoke("Go")
    assert isinstance(message, AIMessage)
    [call] = message.tool_calls
    assert call["name"] == name and call["id"] and call["type"] == "tool_call"
    assert isinstance(call["args"], dict)
    assert message.response_metadata["finish_reason"] == "tool_calls"
    sent = engine.requests[-1]
    assert sent.tools is not None and sent.tools[0].function.name == name
    if tool_like is Forecast:
        Forecast.model_validate(call["args"])  # the arguments fit the tool's schema
    if tool_like is get_weather:
        assert get_weather.invoke(call["args"]).startswith("Sunny in")


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        ("any", "required"),
        (True, "required"),
        ("required", "required"),
        ("auto", "auto"),
        ("none", "none"),
    ],
)
def test_tool_choice_spellings(
    tool_server: tuple[ObservedEngine, str], choice: Any, sent: Any
) -> None:
    engine, url = tool_server
    message = _chat(url, "prompt-protocol").bind_tools([multiply, get_weather], tool_choice=choice)
    reply = message.invoke("What is the weather?")
    seen = engine.requests[-1].tool_choice
    assert (seen.model_dump() if hasattr(seen, "model_dump") else seen) == sent
    if sent == "none":
        assert reply.tool_calls == [] and reply.content == "hello world"
    else:
        assert reply.tool_calls[0]["name"] == "get_weather"


def test_an_unknown_tool_name_is_refused_when_binding() -> None:
    chat = ChatPromptwire(endpoint_url="http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="not one of the bound tools"):
        chat.bind_tools([multiply], tool_choice="divide")


def test_streamed_tool_call_chunks_add_up_to_the_call(tool_url: str, wire: str) -> None:
    bound = _chat(tool_url, wire).bind_tools([get_weather], tool_choice="get_weather")
    chunks = list(bound.stream("Weather?"))
    assert any(chunk.tool_call_chunks for chunk in chunks)
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk)
    [call] = total.tool_calls
    assert call["name"] == "get_weather"
    assert get_weather.invoke(call["args"]).startswith("Sunny in")
    assert total.response_metadata["finish_reason"] == "tool_calls"


async def test_async_calls_and_streams(tool_url: str, wire: str) -> None:
    bound = _chat(tool_url, wire).bind_tools([get_weather], tool_choice="required")
    message = await bound.ainvoke("Weather?")
    assert message.tool_calls[0]["name"] == "get_weather"
    total: AIMessageChunk | None = None
    async for chunk in bound.astream("Weather?"):
        total = chunk if total is None else total + chunk
    assert total is not None and total.tool_calls[0]["name"] == "get_weather"


def test_a_tool_result_goes_back_and_is_answered(
    tool_server: tuple[ObservedEngine, str], wire: str
) -> None:
    engine, url = tool_server
    bound = _chat(url, wire).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    asked = bound.invoke([question])
    call = asked.tool_calls[0]
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answer = bound.invoke([question, asked, result])
    assert answer.content == result.content and answer.tool_calls == []
    sent = engine.requests[-1].messages
    assert sent is not None and [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls is not None
    assert sent[1].tool_calls[0].id == call["id"]
    assert json.loads(sent[1].tool_calls[0].function.arguments) == call["args"]
    assert sent[2].tool_call_id == call["id"]


# -- with_structured_output ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_gives_validated_pydantic_objects(
    tool_server: tuple[ObservedEngine, str], wire: str, method: Any
) -> None:
    engine, url = tool_server
    forecast = _chat(url, wire).with_structured_output(Forecast, method=method).invoke("Paris?")
    assert isinstance(forecast, Forecast)
    sent = engine.requests[-1]
    if method == "json_schema":
        assert sent.response_format is not None and sent.response_format.type == "json_schema"
        assert sent.tools is None
    else:
        assert sent.tools is not None and sent.response_format is None
        assert sent.tool_choice is not None and sent.tool_choice != "auto"


@pytest.mark.parametrize("schema", [Movie, MOVIE_SCHEMA], ids=["typeddict", "json-schema"])
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_gives_dicts_for_typeddicts_and_schemas(
    tool_url: str, wire: str, schema: Any, method: Any
) -> None:
    movie = _chat(tool_url, wire).with_structured_output(schema, method=method).invoke("A film?")
    assert isinstance(movie, dict)
    assert set(movie) == {"title", "year"} and isinstance(movie["year"], int)
    assert movie["year"] >= 1900 or schema is Movie


async def test_structured_output_async_and_with_the_raw_message(tool_url: str, wire: str) -> None:
    structured = _chat(tool_url, wire).with_structured_output(Forecast, include_raw=True)
    result = await structured.ainvoke("Paris?")
    assert isinstance(result, dict)
    assert isinstance(result["raw"], AIMessage)
    assert isinstance(result["parsed"], Forecast)
    assert result["parsing_error"] is None
    assert Forecast.model_validate_json(str(result["raw"].content)) == result["parsed"]


def test_json_mode_answers_a_json_object(tool_url: str, wire: str) -> None:
    value = _chat(tool_url, wire).with_structured_output(method="json_mode").invoke("JSON please")
    assert value == {"reply": "hello world"}


def test_a_reply_that_does_not_fit_the_schema_is_a_parsing_error_with_include_raw(
    tool_url: str,
) -> None:
    """json_mode sends no schema: the dummy's object does not fit Forecast, and with include_raw
    that is reported, not raised."""
    structured = _chat(tool_url, "prompt-protocol").with_structured_output(
        Forecast, method="json_mode", include_raw=True
    )
    result = structured.invoke("x")
    assert isinstance(result, dict)
    assert result["parsed"] is None and result["parsing_error"] is not None
    with pytest.raises(Exception, match="Forecast"):
        _chat(tool_url, "prompt-protocol").with_structured_output(
            Forecast, method="json_mode"
        ).invoke("x")


def test_bad_structured_output_arguments_are_refused() -> None:
    chat = ChatPromptwire(endpoint_url="http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="needs a schema"):
        chat.with_structured_output(None, method="json_schema")
    with pytest.raises(ValueError, match="method must be"):
        chat.with_structured_output(Forecast, method="xml")  # type: ignore[arg-type]


# -- calls a model got wrong -----------------------------------------------------------------


class BrokenCallEngine(Engine):
    """A model that calls a tool with arguments that are not JSON."""

    model_name = "broken"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(tools=True)

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        yield ToolCall("call_bad", "get_weather", '{"city": "Par')
        yield Finish(FinishReason.TOOL_CALLS, Usage())


@pytest.fixture(scope="module")
def broken_url() -> Iterator[str]:
    with serve_engine(BrokenCallEngine()) as server:
        yield server.url


def test_a_call_whose_arguments_do_not_parse_is_an_invalid_tool_call(
    broken_url: str, wire: str
) -> None:
    bound = _chat(broken_url, wire).bind_tools([get_weather])
    message = bound.invoke("Weather?")
    assert message.tool_calls == []
    [invalid] = message.invalid_tool_calls
    assert (invalid["name"], invalid["id"], invalid["args"]) == (
        "get_weather",
        "call_bad",
        '{"city": "Par',
    )
    assert invalid["error"]
    # Streamed, the chunk carries the text as the model wrote it (LangChain's chunks then read
    # what they can of it, as they do while a call is still arriving).
    streamed = list(bound.stream("Weather?"))
    total = streamed[0]
    for chunk in streamed[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk)
    assert [c["args"] for c in total.tool_call_chunks] == ['{"city": "Par']


# -- servers that cannot honour them -----------------------------------------------------------


def test_a_text_only_engine_refuses_with_a_clear_error(text_only_url: str, wire: str) -> None:
    bound = _chat(text_only_url, wire).bind_tools([get_weather])
    with pytest.raises(InvalidRequestError, match="does not support tool calling"):
        bound.invoke("Weather?")
    structured = _chat(text_only_url, wire).with_structured_output(Forecast)
    with pytest.raises(InvalidRequestError, match="does not support structured output"):
        structured.invoke("Weather?")


class V11Server:
    """A protocol 1.1 server: it would ignore tools and answer free text."""

    def __init__(self) -> None:
        self.posts = 0
        self.app = Starlette(
            routes=[
                Route("/", self.answer, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )

    async def answer(self, request: Request) -> JSONResponse:
        self.posts += 1
        return JSONResponse({"prompt": "free text"})

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "protocol": "1.1"})


def test_an_older_server_is_never_sent_tools(wire: str) -> None:
    if wire == "openai":
        pytest.skip("the OpenAI API has tools: its servers are asked directly")
    old = V11Server()
    with serve_asgi(old.app) as server:
        chat = _chat(server.url, wire)
        for runnable in (chat.bind_tools([get_weather]), chat.with_structured_output(Forecast)):
            with pytest.raises(UnsupportedFeatureError, match=r"protocol 1\.1") as caught:
                runnable.invoke("Weather?")
            assert caught.value.url == server.url and not caught.value.may_have_run
        conversation = [
            HumanMessage("Weather?"),
            AIMessage("", tool_calls=[{"name": "get_weather", "args": {}, "id": "c1"}]),
            ToolMessage("Rain", tool_call_id="c1"),
        ]
        with pytest.raises(UnsupportedFeatureError):
            list(chat.stream(conversation))
        assert old.posts == 0
        assert chat.invoke("Plain text is fine").content == "free text"
        assert old.posts == 1


class LoadingThenReady:
    """A protocol 1.2 server (the dummy in tool mode) whose ``/health`` first answers 503 "the
    model is loading" with ``Retry-After``, as a server starting up (a Modal cold start) does."""

    def __init__(self, loading: int, status: int = 503) -> None:
        self.loading = loading
        self.status = status
        self.health_asked = 0
        self.app = create_app(DummyEngine(DummySettings(tool_mode=True)))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/health":
            self.health_asked += 1
            if self.health_asked <= self.loading:
                body = json.dumps({"status": "loading"}).encode()
                headers = [(b"content-type", b"application/json"), (b"retry-after", b"0.2")]
                await send(
                    {"type": "http.response.start", "status": self.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def test_a_server_still_loading_is_waited_for_not_taken_for_an_older_one() -> None:
    """A tool call's protocol check is retried as the call would be: a 503 on ``/health`` is a
    server starting, not one older than 1.2 (it used to raise UnsupportedFeatureError at once)."""
    server_app = LoadingThenReady(loading=2)
    with serve_asgi(server_app) as server:
        chat = ChatPromptwire(endpoint_url=server.url, timeout=30, max_retries=3)
        reply = chat.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather?")
        assert reply.tool_calls[0]["name"] == "get_weather"
        assert server_app.health_asked == 3
        server_app.health_asked = 0
        chat = ChatPromptwire(endpoint_url=server.url, timeout=30, max_retries=3)
        structured = chat.with_structured_output(Forecast)
        assert isinstance(await structured.ainvoke("Forecast?"), Forecast)
        assert server_app.health_asked == 3


def test_a_server_that_stays_down_fails_the_tool_call_as_down() -> None:
    """Out of retries, the call raises what kept ``/health`` away (transient: a caller's retry
    and a router's failover act on it), not UnsupportedFeatureError."""
    server_app = LoadingThenReady(loading=100)
    with serve_asgi(server_app) as server:
        chat = ChatPromptwire(endpoint_url=server.url, timeout=30, max_retries=1)
        with pytest.raises(OverloadedError) as caught:
            chat.bind_tools([get_weather]).invoke("Weather?")
        assert caught.value.transient and not caught.value.may_have_run
        assert server_app.health_asked == 2  # tried, and tried once more
    gone = ChatPromptwire(endpoint_url=server.url, timeout=30, max_retries=0)
    with pytest.raises(EndpointConnectError):
        gone.bind_tools([get_weather]).invoke("Weather?")


def test_a_server_without_health_is_still_an_older_one() -> None:
    """A 404 on ``/health`` (a server from before protocol 1.1) keeps meaning an older server."""
    server_app = LoadingThenReady(loading=100, status=404)
    with serve_asgi(server_app) as server:
        chat = ChatPromptwire(endpoint_url=server.url, timeout=30, max_retries=3)
        with pytest.raises(UnsupportedFeatureError, match="its /health answered 404"):
            chat.bind_tools([get_weather]).invoke("Weather?")
        assert server_app.health_asked == 1  # a definite answer: not retried


def test_a_server_that_sends_no_usage_gives_none_not_zero_tokens() -> None:
    """llama-cpp-python's server streams no usage: ``llm_output`` said 0 tokens, which cost
    tracking recorded as a free call; it is empty now, as ChatOpenAI's is."""
    from promptwire import PromptwireLLM

    old = V11Server()  # answers {"prompt": ...} without usage
    with serve_asgi(old.app) as server:
        llm = PromptwireLLM(endpoint_url=server.url, max_retries=0)
        assert llm.generate(["a", "b"]).llm_output["token_usage"] == {}  # type: ignore[index]
        chat = ChatPromptwire(endpoint_url=server.url, max_retries=0)
        result = chat.generate([[HumanMessage("a")], [HumanMessage("b")]])
        assert result.llm_output is not None and result.llm_output["token_usage"] == {}
