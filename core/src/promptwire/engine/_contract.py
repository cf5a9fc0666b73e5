"""The engine contract: what a backend implements to be served (``Engine``), the events it
yields, and the errors that become the server's status codes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Any, Generic, Literal, cast, final

from typing_extensions import TypeVar

from promptwire.protocol import (
    Capabilities,
    ChatMessage,
    ErrorType,
    FinishReason,
    PromptRequest,
    ToolCall as ProtocolToolCall,
    ToolSpec,
    Usage,
)
from promptwire.protocol.chat_template import render_plain
from promptwire.protocol.stops import StopScanner


@dataclass(frozen=True)
class TextChunk:
    """The next piece of generated text, and how many tokens it is (counted for ``max_tokens``
    and usage when the engine does not report usage itself)."""

    text: str
    tokens: int = 1


@dataclass(frozen=True)
class Finish:
    """The end of a generation, with its usage; optional for an engine.

    An engine that knows better than the core (exact prompt and completion token counts, its own
    reason to stop) yields it last; without it, the core finishes the generation itself.
    """

    finish_reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None
    """The request's stop sequence that ended the text, when one did (finish reason ``stop``);
    an engine that stops at the request's stop sequences itself may say which here."""


@dataclass(frozen=True)
class ToolCall:
    """A whole call of one of the request's tools (v1.2). ``arguments`` is the JSON text of
    the arguments as the model wrote them. Engines yield these before ``Finish``, whose reason
    is then ``FinishReason.TOOL_CALLS``."""

    id: str
    name: str
    arguments: str

    def to_protocol(self) -> ProtocolToolCall:
        return ProtocolToolCall.model_validate(
            {"id": self.id, "function": {"name": self.name, "arguments": self.arguments}}
        )


EngineEvent = TextChunk | ToolCall | Finish


class RequestLimits:
    """A request's ``stop`` sequences and ``max_tokens`` applied to its engine's events one at a
    time, as ``Engine.generate`` promises them; synchronous, so that an engine's own thread can
    apply them too (``WorkerEngine.generate_to``).

    ``feed`` each event and pass on what it returns; once ``done`` (or when the engine's events
    end first), ``closing`` gives the held-back text and the one ``Finish``.
    """

    # What every request starts with, read from the class until first set (a request's limits
    # are made on the way of every request: the fewer stores the better).
    _produced = 0
    _called = False
    _finish: Finish | None = None
    done = False
    """The request has its end: pass on ``closing()`` and stop the engine's events."""

    def __init__(self, request: PromptRequest, usage: Callable[[int], Usage]) -> None:
        self._scanner = StopScanner(request.stop)
        self._limit = request.max_tokens
        self._usage = usage  # of the completion tokens produced; asked once, at the end

    def feed(self, event: EngineEvent) -> EngineEvent | None:
        """What of ``event`` to pass on now (None: nothing yet). Not called once ``done``."""
        if isinstance(event, TextChunk):  # nearly every event: the shortest way
            produced = self._produced + event.tokens
            limit = self._limit
            if limit is not None and produced > limit:
                self._finish = Finish(FinishReason.LENGTH, self._usage(self._produced))
                self.done = True
                return None
            self._produced = produced
            scanner = self._scanner
            text = scanner.feed(event.text)
            if scanner.stopped:
                self._finish = Finish(FinishReason.STOP, self._usage(produced), scanner.matched)
                self.done = True
            if not text:
                return None
            # Most chunks pass whole: the engine's own event, not a copy of it.
            return event if text == event.text else replace(event, text=text)
        if isinstance(event, ToolCall):  # whole calls: neither cut nor scanned
            self._called = True
            return event
        if not isinstance(event, Finish):  # once a request: a backend's bug named, not a 500
            raise TypeError(
                f"the engine yielded {type(event).__name__} {event!r:.80}: an engine's events "
                "are TextChunk, ToolCall and, last, Finish"
            )
        self._finish, self.done = event, True
        return None

    def closing(self) -> list[EngineEvent]:
        """The text held back (it could have begun a stop sequence) and exactly one ``Finish``,
        whose reason ``Engine.generate`` says."""
        scanner = self._scanner
        tail = scanner.flush()
        finish = self._finish
        if finish is None:
            reason = FinishReason.TOOL_CALLS if self._called else FinishReason.STOP
            finish = Finish(reason, self._usage(self._produced))
        elif scanner.stopped and (
            finish.finish_reason is not FinishReason.STOP or finish.stop_sequence is None
        ):
            finish = replace(finish, finish_reason=FinishReason.STOP, stop_sequence=scanner.matched)
        return [TextChunk(tail, tokens=0), finish] if tail else [finish]


@dataclass(frozen=True)
class Completion:
    """A whole reply, assembled from a generation."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    stop_sequence: str | None = None
    """The request's stop sequence that ended the text, if one did (``Finish.stop_sequence``)."""


@dataclass(frozen=True)
class EngineMetric:
    """One sample an engine reports about itself, read at every scrape of ``GET /metrics``.

    The server exposes it as ``promptwire_engine_<name>`` (a counter gets ``_total`` added), so
    a third-party engine's metrics sit beside the server's without needing prometheus-client.
    Samples of one name form one metric; give them the same ``kind`` and ``documentation`` and
    different ``labels``.
    """

    name: str
    """Lower case letters, digits and underscores, e.g. ``cache_pages_used``."""
    value: float
    documentation: str
    kind: Literal["gauge", "counter"] = "gauge"
    labels: Mapping[str, str] = field(default_factory=dict)


class EngineError(Exception):
    """An error an engine raises on purpose; its message always reaches the client.

    Raised from ``prepare`` or before a stream's first chunk, it is the reply: its
    ``status_code``, its ``error_type`` and its message (with ``Retry-After`` when
    ``retry_after`` is set). Raised later in a stream, it ends the stream with an ``error`` event
    of the same type and message. Any other exception is logged on the server and reaches the
    client only as ``server_error`` "internal server error", so an engine's internals never leak.
    """

    status_code = 500
    error_type = ErrorType.SERVER_ERROR

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RequestRejected(EngineError):
    """The request cannot be served as asked (for example, a prompt longer than the context)."""

    status_code = 422
    error_type = ErrorType.INVALID_REQUEST


class RequestUnsupported(RequestRejected):
    """The request asks for what this engine cannot honour (v1.2: tools, a response format)."""

    error_type = ErrorType.UNSUPPORTED


class EngineOverloaded(EngineError):
    """Too busy to take the request now: a 503 with ``Retry-After``; clients may retry."""

    status_code = 503
    error_type = ErrorType.OVERLOADED


class EngineNotReady(EngineError):
    """Still loading: a 503 ``not_ready`` with ``Retry-After``; clients may retry."""

    status_code = 503
    error_type = ErrorType.NOT_READY


PreparedT = TypeVar("PreparedT", default=PromptRequest)
_Prepare = TypeVar("_Prepare", bound=Callable[..., Any])
QUICK_PREPARE_MARK = "__promptwire_quick_prepare__"


def quick_prepare(prepare: _Prepare) -> _Prepare:
    """Mark an engine's ``prepare`` as one that returns at once for a plain prompt (a request
    without ``messages``, hence without tools or a response format): no tokenizer, no grammar,
    no I/O. The server then prepares such requests on the event loop rather than in a worker
    thread, which saves the thread's round trip, the largest part of a small request's server
    CPU (benchmark 5).

    ``render_chat`` and ``render_chat_with_tools`` take the mark too, for a template that is
    a string's assembly (no Jinja, no tokenizer): when an engine's ``prepare`` and both of them
    are marked, a conversation without tools or a response format is rendered and prepared on
    the event loop as well (benchmark 8's conversation routes). ``Engine``'s own three, the
    plain template's, are marked.

    The mark is on the method: a subclass that overrides one is served in the thread again
    unless it marks its own.
    """
    setattr(prepare, QUICK_PREPARE_MARK, True)
    return prepare


"""What ``Engine.prepare`` makes of a request and ``Engine.stream`` generates from."""


class Engine(ABC, Generic[PreparedT]):
    """A text generator behind the protocol: ``prepare`` a request, then ``stream`` it.

    ``Engine`` alone is ``Engine[PromptRequest]``: ``stream`` gets the request itself. An engine
    that prepares requests into something of its own declares it: ``Engine[MyPrepared]``.
    """

    #: Reported as ``model`` in replies and on ``/health``.
    model_name: str | None = None

    async def start(self) -> None:
        """Load what generation needs. Called once before serving; must be safe to call twice."""

    async def stop(self) -> None:
        """Release resources. Called once when the server shuts down."""

    @property
    def ready(self) -> bool:
        """Whether requests can be served now, once ``start`` has returned.

        The server answers 503 ``not_ready`` until its lifespan has awaited ``start`` and while
        this is False, so the default (True) suits an engine that loads everything in ``start``.
        Override it for an engine that goes on loading in the background after ``start``.
        """
        return True

    @property
    def not_ready_reason(self) -> str:
        """Why ``ready`` is False, said on ``/health``'s 503 (an engine in its own process says
        "engine restarting" while its supervisor starts it again)."""
        return "the model is loading"

    @property
    def out_of_order(self) -> str | None:
        """Why this engine will serve nothing more until it is started again (its worker
        stopped on an error), or None while it can. While it is set ``ready`` is False and
        ``not_ready_reason`` says so; an engine in its own process (``ProcessEngine``) is then
        restarted, as after a crash."""
        return None

    @property
    def capabilities(self) -> Capabilities:
        """What this engine honours beyond text (protocol v1.2), advertised on ``/health``.

        The default is nothing: the server then refuses requests with ``tools`` (unless
        ``tool_choice`` is ``none``) or a JSON ``response_format`` with a 422. An engine that
        can honour them returns ``Capabilities(tools=True)`` and/or
        ``Capabilities(structured_output=True)`` (once loaded: it may depend on the model)."""
        return Capabilities()

    @quick_prepare
    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt for a conversation (protocol v1.1 ``messages``), by the model's chat template.

        The server calls it once the engine is ready and serves the request with this prompt in
        place of the request's own. The default is the plain template
        (``promptwire.protocol.chat_template``); an engine whose model has a template overrides
        this.
        Raise ``RequestRejected`` for a conversation the template cannot render.
        """
        return render_plain(messages)

    @quick_prepare
    def render_chat_with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> str:
        """The prompt for a conversation that offers the model ``tools`` (protocol v1.2).

        Called instead of ``render_chat`` only for an engine whose ``capabilities`` say
        ``tools``, when the request offers tools and ``tool_choice`` is not ``none``. An engine
        whose model is prompted with its tools (a Hugging Face chat template's ``tools``)
        renders them here; the default ignores them and calls ``render_chat``.
        """
        return self.render_chat(messages)

    @quick_prepare
    def prepare(self, request: PromptRequest) -> PreparedT:
        """Check ``request`` and do the work that must come before generating it.

        The server calls it before answering, so what it raises (``RequestRejected``: a 422;
        ``EngineOverloaded``: a 503) is the reply, and nothing has been generated. It calls it
        (and ``render_chat``) in a worker thread, a few requests at once, so the event loop
        keeps answering while it tokenizes or builds a grammar: it must be thread-safe. The
        request's JSON Schemas are already within ``promptwire.server.schema_budget``'s bounds; a
        schema the engine derives from them can be checked with ``check_schema``. What it
        returns is what ``stream`` generates from: an engine that tokenizes, builds sampler
        settings or checks the context length here returns them (``Engine[MyPrepared]``) and
        gets them back in ``stream``, with nothing to recompute or look up. The default returns
        the request itself, for an engine of the default ``Engine[PromptRequest]``.
        """
        return cast(PreparedT, request)

    @property
    def prepares_quickly(self) -> bool:
        """Whether this engine's ``prepare`` is marked ``@quick_prepare``: the server then
        prepares a plain prompt on the event loop rather than in a worker thread."""
        return _quick_methods(type(self))[0]

    @property
    def renders_quickly(self) -> bool:
        """Whether this engine's ``render_chat`` and ``render_chat_with_tools`` are both marked
        ``@quick_prepare`` (the plain template's are): with ``prepares_quickly``, the server then
        renders and prepares a conversation without tools or a response format on the event
        loop."""
        return _quick_methods(type(self))[1]

    def count_prompt_tokens(self, request: PromptRequest) -> int:
        """The prompt's size in tokens, for usage when the engine yields no ``Finish``.

        The default counts whitespace-separated words; an engine with a tokenizer overrides it
        or yields a ``Finish`` with exact counts.
        """
        return len(request.prompt.split())

    def metrics(self) -> Sequence[EngineMetric]:
        """What the engine reports about itself on ``GET /metrics`` (queues, cache, failures).

        Called on the event loop at every scrape, so it must be cheap and must not block: read
        figures the engine keeps up to date, never walk structures another thread is changing.
        """
        return ()

    @abstractmethod
    def stream(self, prepared: PreparedT) -> AsyncGenerator[EngineEvent, None]:
        """Yield the generated text for ``prepare``'s result as ``TextChunk``s (and, for an
        engine with tools, ``ToolCall``s); optionally end with one ``Finish``.

        The engine may ignore ``stop`` and ``max_tokens``: ``generate`` enforces both (and closes
        this generator when it has enough). Honouring them here saves generating text that is
        thrown away. Closing the generator cancels the generation: clean up in ``finally``.
        """

    @final
    async def generate(
        self, request: PromptRequest, prepared: PreparedT | None = None
    ) -> AsyncGenerator[EngineEvent, None]:
        """``stream`` under the request's limits: what the server serves. Not for overriding.

        ``prepared``: ``prepare(request)``'s result when the caller has it already (the server
        prepares before answering); otherwise ``generate`` prepares the request itself.

        Text is held back while it could be the start of a stop sequence and never includes
        one; at most ``max_tokens`` tokens are emitted; ``ToolCall``s pass whole; exactly one
        ``Finish`` comes last, the engine's own when it sent one (its usage is exact), with the
        finish reason ``stop`` when a stop sequence ended the text, ``length`` when
        ``max_tokens`` did and ``tool_calls`` when the engine called tools and said no more.
        """
        limits = RequestLimits(request, partial(self._usage, request))
        events = self.stream(self.prepare(request) if prepared is None else prepared)
        try:
            async for event in events:
                if (passed := limits.feed(event)) is not None:
                    yield passed
                if limits.done:
                    break
        finally:
            await events.aclose()
        for event in limits.closing():
            yield event

    def _usage(self, request: PromptRequest, completion_tokens: int) -> Usage:
        return Usage(
            prompt_tokens=self.count_prompt_tokens(request), completion_tokens=completion_tokens
        )

    @final
    async def complete(
        self, request: PromptRequest, prepared: PreparedT | None = None
    ) -> Completion:
        """The whole reply of ``generate``. Not for overriding.

        The generation is closed here, once its ``Finish`` is in: left to the garbage
        collector, a generator suspended at its last ``yield`` is closed by a task of its own
        that the event loop makes later (about 500 bytecodes and 44,000 instructions a
        request: ``python -m benchmarks.route_cost --bytecodes``, callgrind)."""
        pieces: list[str] = []
        calls: list[ToolCall] = []
        async with aclosing(self.generate(request, prepared)) as events:
            async for event in events:
                if isinstance(event, TextChunk):
                    pieces.append(event.text)
                elif isinstance(event, ToolCall):
                    calls.append(event)
                else:
                    return Completion(
                        "".join(pieces),
                        event.finish_reason,
                        event.usage,
                        tuple(calls),
                        event.stop_sequence,
                    )
        raise EngineError("the engine ended a generation without finishing it")  # pragma: no cover


@cache  # asked for every request; a class's methods do not change while it serves
def _quick_methods(kind: type[Engine[Any]]) -> tuple[bool, bool]:
    """Whether ``kind``'s ``prepare``, and both its chat templates, are ``@quick_prepare``."""

    def quick(method: Any) -> bool:
        return getattr(method, QUICK_PREPARE_MARK, False) is True

    return quick(kind.prepare), quick(kind.render_chat) and quick(kind.render_chat_with_tools)


def check_capabilities(engine: Engine[Any], request: PromptRequest) -> None:
    """Refuse (``RequestUnsupported``, 422) a request asking for tool calls or structured output
    that ``engine`` does not declare, before anything is rendered or generated: a server never
    answers free text in their place."""
    wants_tools, wants_json = request.wants_tools(), request.wants_json()
    if not (wants_tools or wants_json):
        return  # a plain request: the engine's capabilities are not even asked
    capabilities = engine.capabilities
    if wants_tools and not capabilities.tools:
        raise RequestUnsupported(
            "this server's engine does not support tool calling: send the request without "
            "tools (or with tool_choice 'none')"
        )
    if wants_json and not capabilities.structured_output:
        raise RequestUnsupported(
            "this server's engine does not support structured output: send the request "
            "without a JSON format"
        )


def render_request(engine: Engine[Any], request: PromptRequest) -> str:
    """``request.messages`` rendered by ``engine``, with its tools when it is offered some; cut
    just after the final message's text when the reply continues it (``continue_final_message``).
    """
    assert request.messages is not None
    if request.tools and request.wants_tools() and engine.capabilities.tools:
        rendered = engine.render_chat_with_tools(request.messages, request.tools)
    else:
        rendered = engine.render_chat(request.messages)
    if request.continue_final_message:
        return _continuing(rendered, request.messages[-1].content)
    return rendered


def _continuing(rendered: str, final: str) -> str:
    """``rendered`` up to the end of the final message's text (its last place there; templates
    may trim it), without what closes that turn and opens the next: any template can continue a
    message this way, as transformers' ``continue_final_message`` does."""
    text = final.strip()
    at = rendered.rfind(text)
    if not text or at < 0:
        raise RequestUnsupported(
            "this engine's chat template does not keep the final assistant message's text, so "
            "the reply cannot continue it: send the conversation without it"
        )
    return rendered[: at + len(text)]


def rendered_request(engine: Engine[Any], request: PromptRequest) -> PromptRequest:
    """``request`` as an engine is served it (protocol v1.1): with ``messages``, their rendering
    (``render_request``) as its prompt, the conversation kept in ``messages`` (an engine may
    tokenize a template's rendering differently); without, the request itself."""
    if request.messages is None:
        return request
    return request.with_prompt(render_request(engine, request))
