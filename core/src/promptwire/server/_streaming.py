"""Serving a prepared request: a whole reply, or server-sent events written by a ``StreamForm``
(the prompt protocol's events by default; the OpenAI routes write OpenAI's chunks), with the
first event awaited before answering, send timeouts and the shutdown grace period."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic_core import to_json
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from promptwire.engine import (
    Engine,
    EngineError,
    EngineEvent,
    TextChunk as EngineText,
    ToolCall,
    rendered_request,
)
from promptwire.protocol import (
    EVENT_DELTA,
    EVENT_DONE,
    EVENT_TOOL_CALL,
    ErrorType,
    PromptRequest,
    PromptResponse,
    StreamDone,
    StreamToolCall,
)
from promptwire.server._deadline import SendWatch
from promptwire.server._errors import engine_status, error_event
from promptwire.server._request_body import (
    unless_gone,
)
from promptwire.server._shutdown import (
    SHUTDOWN_MARGIN,
    GracefulShutdown,
)
from promptwire.server.observability._request_context import note_error
from promptwire.server.schema_budget import check_request_schemas

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A request the engine has prepared (``Engine.prepare``): what the server generates."""

    request: PromptRequest
    prepared: Any


def prepare(engine: Engine[Any], request: PromptRequest) -> Job:
    """``request`` prepared by ``engine``, once its schemas are within their budget; what the
    check or the engine raises (a 422, a 503) is the reply."""
    check_request_schemas(request)
    return Job(request, engine.prepare(request))


T = TypeVar("T")

#: What a stream writes: an event, or one already encoded (``delta_event``).
Event = ServerSentEvent | bytes

#: Worker threads per app for the work done before generating (see ``Preparer``).
PREPARE_THREADS = 4

#: Seconds between pings while the engine says nothing, and how long a stream waits for the
#: engine's first event before answering anyway: a long prompt, or a wait for a slot of the
#: engine, then gets the stream's headers, the protocol's opening events and pings, which keep
#: a proxy's idle timeout (Modal's, a load balancer's) from cutting it; an error after that is
#: the stream's error event, not an HTTP status.
PING_SECONDS = 15.0


class Preparer:
    """Runs what must happen before generating (the schema budget's check, the chat template,
    the engine's ``prepare``: tokenizing, building a grammar) in a few worker threads, so the
    event loop keeps answering ``/health`` and other requests whatever one request asks. At
    most ``PREPARE_THREADS`` run at once; more wait their turn, off the loop."""

    def __init__(self, threads: int = PREPARE_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="promptwire-prepare")

    async def run(self, work: Callable[[], T]) -> T:
        # In the request's context (its request id, for the engine's log lines).
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, context.run, work)

    async def job(self, engine: Engine[Any], request: PromptRequest) -> Job:
        """``request`` rendered (its ``messages``, if any: protocol v1.1) and prepared: on the
        event loop where the engine marks that work quick (``quick_prepare``), which saves a
        small request the thread's round trip; in a worker thread otherwise."""
        if _at_once(engine, request):
            return prepare(engine, rendered_request(engine, request))
        return await self.run(lambda: prepare(engine, rendered_request(engine, request)))


def _at_once(engine: Engine[Any], request: PromptRequest) -> bool:
    """A plain prompt for an engine whose ``prepare`` is quick; a conversation without tools or
    a JSON reply for one whose template is quick too (no schema to check, no grammar)."""
    if not engine.prepares_quickly:
        return False
    if request.messages is None:
        return True
    return engine.renders_quickly and not request.tools and not request.wants_json()


async def whole_reply(
    engine: Engine[Any],
    job: Job,
    receive: Callable[[], Awaitable[Any]],
    shutdown: GracefulShutdown,
) -> Response:
    completion = await unless_gone(engine.complete(job.request, job.prepared), receive, shutdown)
    reply = PromptResponse(
        prompt=completion.text,
        usage=completion.usage,
        finish_reason=completion.finish_reason,
        model=engine.model_name,
        tool_calls=[call.to_protocol() for call in completion.tool_calls] or None,
    )
    return Response(reply.model_dump_json(exclude_none=True), media_type="application/json")


class _EventStream(EventSourceResponse):
    """sse-starlette's response, where a client that reads nothing for ``send_timeout`` seconds
    has its stream ended (the generation is cancelled, the slot freed) and is logged in one line,
    not a traceback. The server closes the connection, the answer being unfinished."""

    _watch: SendWatch | None = None

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """sse-starlette's own, with the stream's one ``SendWatch`` rather than an anyio
        cancel scope for every event: a write notes when it began, and one timer for the
        stream ends a write that waits past ``send_timeout`` with ``SendTimeoutError``, as
        before."""
        if self.send_timeout is None:
            await send(message)
            return
        watch = self._watch
        if watch is None:
            watch = self._watch = SendWatch(self.send_timeout)
        writer = watch.begin()
        try:
            await send(message)
        except asyncio.CancelledError:
            if not watch.caught(writer):
                raise
            raise SendTimeoutError() from None
        finally:
            watch.end(writer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            logger.warning(
                "a stream's client read nothing for %g s; the stream was ended", self.send_timeout
            )
        finally:
            if self._watch is not None:
                self._watch.close()


class StreamForm:
    """How a stream's events are written: by default the prompt protocol's ``delta``, ``done``
    and ``error`` events (the OpenAI routes write OpenAI's chunks)."""

    #: The event written every 15 s while the engine says nothing; None: an SSE comment.
    ping: ServerSentEvent | None = None

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.calls = 0  # tool calls written so far: the next one's index

    def opening(self) -> Sequence[Event]:
        """What the stream starts with, before the engine's first event."""
        return ()

    def event(self, event: EngineEvent) -> Sequence[Event]:
        """What one of the engine's events is written as."""
        written = _to_sse(event, self.model, self.calls)
        self.calls += isinstance(event, ToolCall)
        return (written,)

    def error(
        self, status_code: int, error_type: str, message: str, request_id: str | None
    ) -> Event:
        """An error after the stream began (``status_code``: what it would have been answered
        with before; ``request_id``: the request's, for the user to quote)."""
        return error_event(error_type, message, request_id)


async def stream_reply(
    engine: Engine[Any],
    job: Job,
    receive: Callable[[], Awaitable[Any]],
    release: Callable[[], None],
    shutdown: GracefulShutdown,
    send_timeout: float | None,
    form: StreamForm | None = None,
) -> Response:
    form = form or StreamForm(engine.model_name)
    events = engine.generate(job.request, job.prepared)
    # The first event is awaited before answering, for ``PING_SECONDS`` at most, so errors
    # found at the start of a generation (overload, rejection) still get a proper HTTP status;
    # a client that leaves meanwhile frees its slot at once, not when the first token comes.
    first_step = asyncio.ensure_future(anext(events, None))
    try:
        await asyncio.sleep(0)  # the step's first turn: an engine with an event at hand is done
        waited = (
            first_step if first_step.done() else asyncio.wait((first_step,), timeout=PING_SECONDS)
        )
        await unless_gone(waited, receive, shutdown)
        first = first_step.result() if first_step.done() else None
    except BaseException:
        await _abandon(first_step)
        await events.aclose()
        raise
    pending = None if first_step.done() else first_step  # answered before the first event

    def failed(status_code: int, error_type: str, message: str) -> Event:
        """The stream's error event; the request counted under ``error_type`` (not as a client
        that left) and its id in the event, on every route."""
        return form.error(status_code, error_type, message, note_error(error_type))

    def shutting_down() -> Event:
        return failed(
            503,
            ErrorType.SHUTTING_DOWN,
            "the server is shutting down and the stream's grace period ended",
        )

    async def sse() -> AsyncIterator[Event]:
        # On shutdown the stream goes on for the grace period. When that ends, the engine's wait
        # for its next event is cut (by cancelling this task while it waits there, and only
        # then) and the stream ends with an error event rather than just stopping.
        task = asyncio.current_task()
        assert task is not None
        waiting = interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            if waiting:
                interrupted = True
                task.cancel()

        try:
            for opening in form.opening():
                yield opening
            with shutdown.on_expiry(interrupt):
                event: EngineEvent | None = first
                if pending is not None:
                    waiting = True
                    try:
                        event = await pending
                    except asyncio.CancelledError:
                        if not interrupted:
                            raise  # the client left
                        interrupted, event = False, None
                        if task.uncancel() > 0:
                            raise  # cancelled for another reason too
                    finally:
                        waiting = False
                    if event is None:  # cut by the shutdown before it came
                        raise _FirstEventCut
                while event is not None:
                    for written in form.event(event):
                        yield written
                    if shutdown.expired:
                        break
                    waiting = True
                    try:
                        event = await anext(events, None)
                    except asyncio.CancelledError:
                        if not interrupted:
                            raise
                        interrupted = False
                        if task.uncancel() > 0:
                            raise  # cancelled for another reason too (the client left)
                        break
                    finally:
                        waiting = False
                    if interrupted:  # the engine swallowed the cancellation
                        break
                else:
                    return  # the engine finished; its done event is out
            yield shutting_down()
        except _FirstEventCut:
            yield shutting_down()
        except EngineError as exc:
            yield failed(*engine_status(exc), exc.message)
        except Exception:
            logger.exception("stream failed")
            yield failed(500, ErrorType.SERVER_ERROR, "internal server error")
        finally:
            if interrupted:  # the engine did not let the cancellation through: take it back
                task.uncancel()
            await _abandon(first_step)
            await events.aclose()  # on disconnect too: cancels the generation
            release()

    async def cleanup() -> None:  # also runs if the stream was never started
        await _abandon(first_step)
        await events.aclose()
        release()

    ping = form.ping
    return _EventStream(
        sse(),
        ping=int(PING_SECONDS) or 1,
        ping_message_factory=None if ping is None else lambda: ping,
        background=BackgroundTask(cleanup),
        send_timeout=send_timeout,
        # sse-starlette also sees uvicorn stopping, and cuts streams after its own grace
        # period: give the app's time to end them properly first.
        shutdown_grace_period=shutdown.grace + SHUTDOWN_MARGIN,
    )


class _FirstEventCut(Exception):
    """The shutdown's grace period ended before the engine's first event."""


async def _abandon(step: asyncio.Future[Any]) -> None:
    """Cancel the wait for the engine's first event, if it is still on, and let it end: the
    engine's generator cannot be closed while that wait runs in it."""
    if not step.done():
        step.cancel()
    await asyncio.wait((step,))
    if not step.cancelled():
        step.exception()  # read: an error no one awaited is not logged as never retrieved


#: A ``delta`` event as ``ServerSentEvent(StreamDelta(text=...).model_dump_json(),
#: event="delta").encode()`` writes it, around the JSON of its text (which has no line break).
_DELTA_HEAD = f"event: {EVENT_DELTA}\r\ndata: ".encode()
_DELTA_TAIL = b"\r\n\r\n"


def delta_event(text: str) -> bytes:
    """The ``delta`` event of ``text``, encoded: byte for byte what the ``StreamDelta`` model
    and sse-starlette write, for a tenth of their time (``pydantic_core.to_json`` of the same
    object; the event's layout written once). Streams write one for every token."""
    return _DELTA_HEAD + to_json({"text": text}) + _DELTA_TAIL


def sse_event(data: bytes, event: str | None = None) -> bytes:
    """The event as sse-starlette writes ``ServerSentEvent(data, event=event)``, byte for byte,
    without making the object and splitting its lines (streams write one for every token): for
    data on one line, as JSON is. Anything with a line break goes through sse-starlette."""
    if b"\n" in data or b"\r" in data or (event is not None and _LINE_BREAK.search(event)):
        return ServerSentEvent(data.decode(), event=event).encode()
    if event is None:
        return b"data: " + data + b"\r\n\r\n"
    return b"event: " + event.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


_LINE_BREAK = re.compile("[\r\n]")


def _to_sse(event: EngineEvent, model: str | None, call_index: int) -> Event:
    if isinstance(event, EngineText):
        return delta_event(event.text)
    if isinstance(event, ToolCall):
        piece = StreamToolCall(
            index=call_index, id=event.id, name=event.name, arguments=event.arguments
        )
        return ServerSentEvent(piece.model_dump_json(), event=EVENT_TOOL_CALL)
    done = StreamDone(finish_reason=event.finish_reason, usage=event.usage, model=model)
    return ServerSentEvent(done.model_dump_json(exclude_none=True), event=EVENT_DONE)
