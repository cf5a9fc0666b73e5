"""The ASGI app factory: the prompt endpoint protocol served for any engine.

``POST /`` answers a whole reply or, with ``"stream": true``, server-sent events; ``GET /health``
answers once the engine is ready (v1.2: with the engine's capabilities). A v1.1 request's
``messages`` are rendered by the engine's chat template and served in place of its ``prompt``; a
v1.2 request's tools and response format are refused (422) unless the engine declares them, and
its tool calls come back in the reply (``tool_calls``) or as ``tool_call`` events. Every error is
the protocol's JSON error, never a stack trace. A client that disconnects cancels its generation.

Everything here is app-level, so it holds wherever the app runs (``promptwire serve`` and Modal):
request bodies have a deadline, a stream whose client reads nothing is ended, a client that leaves
before the first token frees its slot at once, and on shutdown streams get the same grace period
as whole replies. What belongs to connections (header deadline, connection cap, keep-alive) is in
``promptwire.server.runner``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import math
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import SecretStr, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptwire import coldstart
from promptwire.engine import (
    Engine,
    EngineError,
    EngineEvent,
    EngineNotReady,
    EngineOverloaded,
    ToolCall,
    check_capabilities,
    render_request,
)
from promptwire.engine import TextChunk as EngineText
from promptwire.protocol import (
    EVENT_DELTA,
    EVENT_DONE,
    EVENT_ERROR,
    EVENT_TOOL_CALL,
    MAX_BODY_BYTES,
    PROTOCOL_VERSION,
    ErrorBody,
    ErrorDetail,
    ErrorType,
    Health,
    PromptRequest,
    PromptResponse,
    StreamDelta,
    StreamDone,
    StreamToolCall,
)
from promptwire.server.observability import Observability, observe
from promptwire.server.request_context import error_detail
from promptwire.server.slots import RETRY_AFTER_SECONDS, RequestSlots
from promptwire.settings import DEFAULT_BODY_TIMEOUT, DEFAULT_SEND_TIMEOUT, DEFAULT_SHUTDOWN_GRACE

logger = logging.getLogger(__name__)

HEALTH_PATH = "/health"
# sse-starlette ends a stream by itself this long after the app's own grace period, and uvicorn
# gives up on open connections this long after that: both only after the app has ended its own.
SHUTDOWN_MARGIN = 1.5
_STATUS_ERROR_TYPES = {
    400: ErrorType.BAD_REQUEST,
    401: ErrorType.UNAUTHORIZED,
    404: ErrorType.NOT_FOUND,
    405: ErrorType.METHOD_NOT_ALLOWED,
    408: ErrorType.REQUEST_TIMEOUT,
    413: ErrorType.TOO_LARGE,
    415: ErrorType.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorType.INVALID_REQUEST,
    503: ErrorType.OVERLOADED,
}
NOSNIFF = (b"x-content-type-options", b"nosniff")
T = TypeVar("T")


class RequestError(Exception):
    """A request the server refuses; carries the protocol error to answer with."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str | None = None,
        retry_after: float | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type or _STATUS_ERROR_TYPES.get(status_code, ErrorType.SERVER_ERROR)
        self.message = message
        self.retry_after = retry_after
        self.close = close

    @classmethod
    def from_engine(cls, exc: EngineError) -> RequestError:
        return cls(
            exc.status_code, exc.message, error_type=exc.error_type, retry_after=exc.retry_after
        )


def error_response(
    status_code: int,
    error_type: str,
    message: str,
    retry_after: float | None = None,
    *,
    close: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The protocol's JSON error, with the request's id. ``close`` asks the server to close the
    connection after it."""
    body = ErrorBody(error=error_detail(error_type, message))
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if close:
        headers["Connection"] = "close"
    return Response(
        body.model_dump_json(exclude_none=True),
        status_code,
        headers=headers,
        media_type="application/json",
    )


def _host_name(value: bytes) -> str:
    """The host of a Host header, without its port, brackets or final dot, in lower case."""
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):  # an IPv6 literal
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class RequestGuard:
    """Pure ASGI middleware, the outermost: what must hold of every request and every answer,
    wherever the app runs.

    - every answer carries ``X-Content-Type-Options: nosniff``;
    - a websocket handshake is refused with the protocol's JSON error (400);
    - ``HEAD`` is answered as ``GET`` without the body (RFC 9110 9.1);
    - a request with both ``Content-Length`` and ``Transfer-Encoding`` (a request-smuggling
      attempt) is refused and its connection closed (RFC 9112 6.1);
    - two ``Authorization`` or two ``Host`` headers are refused (servers and proxies disagree on
      which one counts);
    - with ``allowed_hosts``, a ``Host`` not in it is refused: a loopback server must not answer
      a page that a foreign DNS name pointed at 127.0.0.1 (DNS rebinding);
    - an unexpected exception is answered with the protocol's JSON 500 and goes no further.
      Starlette's own handler re-raises it after answering, and uvicorn then drops the
      keep-alive connection without ``Connection: close``, so a client's next request on it
      fails although the server never saw it. Logged once, here.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def answer(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), NOSNIFF]}
            await send(message)

        refusal = self._refusal(scope["headers"])
        if refusal is not None:
            await refusal(scope, receive, answer)
            return
        inner_scope: Scope = scope
        inner_send: Send = answer
        if scope["method"] == "HEAD":
            inner_scope, inner_send = {**scope, "method": "GET"}, _without_body(answer)
        try:
            await self.app(inner_scope, receive, inner_send)
        except Exception:
            logger.exception("unexpected server error")
            if started:  # half a reply is out: only closing the connection can end it
                raise
            await error_response(500, ErrorType.SERVER_ERROR, "internal server error")(
                inner_scope, receive, inner_send
            )

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> Response | None:
        seen: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            if name in (b"authorization", b"host", b"content-length", b"transfer-encoding"):
                seen.setdefault(name, []).append(value)
        if b"content-length" in seen and b"transfer-encoding" in seen:
            return error_response(
                400,
                ErrorType.BAD_REQUEST,
                "a request may not carry both Content-Length and Transfer-Encoding",
                close=True,
            )
        for name in (b"authorization", b"host"):
            if len(seen.get(name, ())) > 1:
                header = name.decode().title()
                return error_response(
                    400, ErrorType.BAD_REQUEST, f"a request may carry one {header} header"
                )
        if self.allowed_hosts is not None:
            hosts = seen.get(b"host", [])
            if not hosts or _host_name(hosts[0]) not in self.allowed_hosts:
                return error_response(
                    400,
                    ErrorType.BAD_REQUEST,
                    "this server answers only to its own host names, "
                    + ", ".join(sorted(self.allowed_hosts)),
                )
        return None


def _without_body(send: Send) -> Send:
    async def head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return head


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """This server has no websocket endpoint. Where the server lets the app answer the
    handshake (the ASGI websocket denial extension: uvicorn, Hypercorn), the answer is the
    protocol's JSON error; elsewhere the handshake is simply closed."""
    if (await receive())["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = ErrorBody(
        error=ErrorDetail(
            type=ErrorType.BAD_REQUEST,
            message="this server has no websocket endpoint; see the prompt endpoint protocol",
        )
    ).model_dump_json(exclude_none=True)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json"), NOSNIFF],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body.encode()})


class BearerAuth:
    """Pure ASGI middleware: every route but ``open_paths`` (``/health``) needs
    ``Authorization: Bearer <token>``."""

    def __init__(
        self, app: ASGIApp, token: str, open_paths: Collection[str] = (HEALTH_PATH,)
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, credentials = given.partition(b" ")
        # The scheme is case-insensitive (RFC 9110 11.1); the token is compared in constant time.
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(b" "), self.token):
            await self.app(scope, receive, send)
            return
        reason = "missing bearer token" if not given else "invalid bearer token"
        await error_response(401, ErrorType.UNAUTHORIZED, reason)(scope, receive, send)


class _ClientGone(Exception):
    """The client disconnected before its answer; nobody is left to answer."""


class GracefulShutdown:
    """The server's graceful shutdown, as the app sees it.

    ``promptwire serve`` calls ``begin`` when it is told to stop (SIGTERM, Ctrl+C). From then
    on, running whole replies and streams have ``grace`` seconds to finish; after that a stream
    ends with an ``error`` event (``shutting_down``) and a whole reply, or a stream that has not
    started, is answered 503 ``shutting_down`` with ``Retry-After``: never a cut without a word.
    """

    def __init__(self, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        self.grace = grace
        self.began = False
        self.expired = False
        self._callbacks: set[Callable[[], object]] = set()

    def begin(self) -> None:
        """Start the grace period; called in the app's event loop. Calling it again does nothing."""
        if not self.began:
            self.began = True
            asyncio.get_running_loop().call_later(self.grace, self._expire)

    def reset(self) -> None:
        """Serving again (the app's lifespan starts anew): no shutdown under way."""
        self.began = self.expired = False

    def _expire(self) -> None:
        self.expired = True
        for callback in list(self._callbacks):
            callback()

    def call_on_expiry(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when the grace period ends (at once if it has)."""
        if self.expired:
            callback()
        self._callbacks.add(callback)

    def forget(self, callback: Callable[[], object]) -> None:
        self._callbacks.discard(callback)

    @contextlib.contextmanager
    def on_expiry(self, callback: Callable[[], object]) -> Iterator[None]:
        """Within the block, ``callback`` is called when the grace period ends."""
        self.call_on_expiry(callback)
        try:
            yield
        finally:
            self.forget(callback)


def graceful_shutdown(app: Any) -> GracefulShutdown | None:
    """The shutdown of an app made by ``create_app`` (for the server running it), else None."""
    shutdown = getattr(getattr(app, "state", None), "graceful_shutdown", None)
    return shutdown if isinstance(shutdown, GracefulShutdown) else None


def _shutting_down() -> RequestError:
    return RequestError(
        503,
        "the server is shutting down and its grace period ended; try again",
        error_type=ErrorType.SHUTTING_DOWN,
        retry_after=RETRY_AFTER_SECONDS,
        close=True,
    )


async def _until_disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(
    work: Awaitable[T], receive: Callable[[], Awaitable[Any]], shutdown: GracefulShutdown
) -> T:
    """Await ``work`` while watching the client and the shutdown: if the client leaves
    (``_ClientGone``) or the grace period ends (503) first, ``work`` is cancelled, which frees
    the engine and the request's slot at once."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(receive))
    shutdown.call_on_expiry(task.cancel)
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        shutdown.forget(task.cancel)
        watcher.cancel()
        if not task.done():
            task.cancel()  # the client is gone: free the engine
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        return task.result()
    if shutdown.expired:
        raise _shutting_down()
    raise _ClientGone


async def _read_body(request: Request, limit: int, seconds: float | None) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is larger than the limit of {limit} bytes")
    body = bytearray()
    # The deadline as a bare timer that cancels this task: asyncio.timeout does the same at
    # twice the cost, and this runs for every request.
    task = asyncio.current_task()
    late = False

    def expire() -> None:
        nonlocal late
        late = True
        if task is not None:
            task.cancel()

    timer = None if seconds is None else asyncio.get_running_loop().call_later(seconds, expire)
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError(413, f"the body is larger than the limit of {limit} bytes")
    except asyncio.CancelledError:
        if not late or (task is not None and task.uncancel() > 0):
            raise  # cancelled for another reason too
        raise RequestError(
            408, f"the body did not arrive within {seconds:g} s", close=True
        ) from None
    except ClientDisconnect:
        raise _ClientGone from None
    finally:
        if timer is not None:
            timer.cancel()
    return bytes(body)


def _require_json(request: Request) -> None:
    """The body must be declared JSON. A browser sends a cross-site request without asking the
    server first only for a few "simple" content types (text/plain among them); requiring
    ``application/json`` makes it ask (a CORS preflight), and this server never says yes."""
    declared = request.headers.getlist("content-type")
    media_type = declared[0].partition(";")[0].strip().lower() if len(declared) == 1 else ""
    if media_type != "application/json":
        raise RequestError(415, "the body must be JSON, sent with Content-Type: application/json")


# Where the request body's schema sits in the OpenAPI document. Its nested models stay in its own
# ``$defs``; pydantic's default refs (``#/$defs/ChatMessage``) would point at the document's root,
# where there is nothing, and tools that read the schema (schemathesis, client generators) fail.
_REQUEST_SCHEMA_POINTER = "#/paths/~1/post/requestBody/content/application~1json/schema"


def _request_body_schema() -> dict[str, Any]:
    return PromptRequest.model_json_schema(ref_template=_REQUEST_SCHEMA_POINTER + "/$defs/{model}")


# Python converts at most 4,300 digits to an int (a guard against quadratic time; the limit can
# be lowered to 640, never below). No integer the protocol accepts has more than 19 digits, and an
# unknown key's value is ignored, so a longer one is read as an infinity, which every known key
# refuses: the request is then accepted or refused as the protocol says, not for its length.
_MAX_INT_DIGITS = 640


def _parse_int(digits: str) -> int | float:
    if len(digits) <= _MAX_INT_DIGITS:
        return int(digits)
    return -math.inf if digits.startswith("-") else math.inf


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")  # NaN, Infinity, -Infinity: Python's extensions


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_not_json)


def _parse_request(body: bytes) -> PromptRequest:
    try:
        text = body.decode("utf-8-sig")  # JSON is UTF-8 (RFC 8259 8.1); a BOM may be ignored
        data = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise RequestError(422, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError(422, "the body must be a JSON object with a 'prompt' string")
    try:
        return PromptRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)[:10]
        )
        raise RequestError(422, f"invalid request: {problems}") from None


def _freeze_startup_heap() -> None:
    """Put what start-up left alive (modules, the app, the engine's objects) out of the cyclic
    garbage collector's reach. Otherwise every full collection rescans all of it while requests
    wait: 25-35 ms each on a small machine, under load often enough to set the p99 latency."""
    gc.collect()
    gc.freeze()


def create_app(
    engine: Engine[Any],
    *,
    api_key: str | SecretStr | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_in_flight: int | None = None,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    allowed_hosts: Collection[str] | None = None,
    observability: Observability | None = None,
) -> FastAPI:
    """Build the protocol app for ``engine``. The app's lifespan starts and stops the engine.

    ``body_timeout``: seconds a request has to send its body (408 after). ``send_timeout``:
    seconds a stream's client may read nothing before the stream is ended. ``shutdown_grace``:
    seconds running requests get once the server stopping them calls ``begin`` on
    ``graceful_shutdown(app)``. ``allowed_hosts``: the only ``Host`` names answered (for a
    server bound to loopback); None answers any. ``observability``: metrics, the request log and
    traces (``promptwire.server.observability``); None: the defaults.
    """

    shutdown = GracefulShutdown(shutdown_grace)
    started = False  # the engine is served only between its start() and its stop()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal started
        shutdown.reset()
        if engine.ready:
            await engine.start()  # started already (a Modal container's enter hook)
        else:
            with coldstart.phase("engine_start"):
                await engine.start()
        started = True
        _freeze_startup_heap()
        try:
            yield
        finally:
            started = False
            gc.unfreeze()
            await engine.stop()

    def serving() -> bool:
        return started and engine.ready

    app = FastAPI(
        title="promptwire prompt endpoint",
        version=PROTOCOL_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,  # "/health/" is not found; no redirect built from a Host header
    )
    app.state.graceful_shutdown = shutdown
    options = observability or Observability()
    token = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    if token:
        app.add_middleware(BearerAuth, token=token, open_paths=options.public_paths(HEALTH_PATH))
    # The outermost but the observer and the OpenAI routes' error shape (add_openai_routes).
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts)
    engine = observe(app, engine, options)  # adds /metrics and the request observer
    slots = RequestSlots(max_in_flight)  # shared with the OpenAI routes

    @app.exception_handler(RequestError)
    async def _on_request_error(_: Request, exc: RequestError) -> Response:
        return error_response(
            exc.status_code, exc.error_type, exc.message, exc.retry_after, close=exc.close
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        error_type = _STATUS_ERROR_TYPES.get(exc.status_code, ErrorType.INVALID_REQUEST)
        return error_response(exc.status_code, error_type, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(422, ErrorType.INVALID_REQUEST, "invalid request")

    @app.get(
        HEALTH_PATH,
        response_model=Health,
        responses={503: {"model": ErrorBody, "description": "Not ready yet"}},
    )
    async def health() -> Response:
        if not serving():
            return error_response(
                503, ErrorType.NOT_READY, "the model is loading", RETRY_AFTER_SECONDS
            )
        health = Health(model=engine.model_name, capabilities=engine.capabilities)
        return Response(health.model_dump_json(), media_type="application/json")

    @app.post(
        "/",
        response_model=PromptResponse,
        responses={
            200: {"content": {"text/event-stream": {}}},
            401: {"model": ErrorBody},
            408: {"model": ErrorBody},
            413: {"model": ErrorBody},
            415: {"model": ErrorBody},
            422: {"model": ErrorBody},
            500: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _request_body_schema()}},
            }
        },
    )
    async def generate(request: Request) -> Response:
        _require_json(request)
        try:
            body = await _read_body(request, max_body_bytes, body_timeout)
        except _ClientGone:
            return Response(status_code=499)
        prompt_request = _parse_request(body)
        if not serving():
            raise RequestError.from_engine(
                EngineNotReady("the model is loading", retry_after=RETRY_AFTER_SECONDS)
            )
        try:
            release = slots.take()
        except EngineOverloaded as exc:
            raise RequestError.from_engine(exc) from None
        streaming = False
        try:
            check_capabilities(engine, prompt_request)
            job = prepare(engine, _render_messages(engine, prompt_request))
            if prompt_request.stream:
                response = await _stream_reply(
                    engine, job, request.receive, release, shutdown, send_timeout
                )
                streaming = True  # the stream releases its slot when it ends
                return response
            return await _whole_reply(engine, job, request.receive, shutdown)
        except _ClientGone:
            return Response(status_code=499)  # nobody reads it; the access log shows it
        except EngineError as exc:
            raise RequestError.from_engine(exc) from None
        finally:
            if not streaming:
                release()

    # Imported here: the OpenAI routes are built from this module's parts.
    from promptwire.server.openai_routes import add_openai_routes

    add_openai_routes(
        app,
        engine,
        serving=serving,
        slots=slots,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        send_timeout=send_timeout,
        shutdown=shutdown,
    )
    return app


@dataclass(frozen=True)
class Job:
    """A request the engine has prepared (``Engine.prepare``): what the server generates."""

    request: PromptRequest
    prepared: Any


def prepare(engine: Engine[Any], request: PromptRequest) -> Job:
    """``request`` prepared by ``engine``; what the engine raises (a 422, a 503) is the reply."""
    return Job(request, engine.prepare(request))


def _render_messages(engine: Engine[Any], request: PromptRequest) -> PromptRequest:
    """Protocol v1.1: a request with ``messages`` is served with their rendering as its prompt
    (v1.2: with its tools, for an engine that takes them)."""
    if request.messages is None:
        return request
    return request.model_copy(update={"prompt": render_request(engine, request)})


async def _whole_reply(
    engine: Engine[Any],
    job: Job,
    receive: Callable[[], Awaitable[Any]],
    shutdown: GracefulShutdown,
) -> Response:
    completion = await _unless_gone(engine.complete(job.request, job.prepared), receive, shutdown)
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            logger.warning(
                "a stream's client read nothing for %g s; the stream was ended", self.send_timeout
            )


class StreamForm:
    """How a stream's events are written: by default the prompt protocol's ``delta``, ``done``
    and ``error`` events (the OpenAI routes write OpenAI's chunks)."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.calls = 0  # tool calls written so far: the next one's index

    def opening(self) -> Sequence[ServerSentEvent]:
        """What the stream starts with, before the engine's first event."""
        return ()

    def event(self, event: EngineEvent) -> Sequence[ServerSentEvent]:
        """What one of the engine's events is written as."""
        written = _to_sse(event, self.model, self.calls)
        self.calls += isinstance(event, ToolCall)
        return (written,)

    def error(self, status_code: int, error_type: str, message: str) -> ServerSentEvent:
        """An error after the stream began (``status_code``: what it would have been answered
        with before)."""
        return _error_event(error_type, message)


async def _stream_reply(
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
    try:
        # The first event is awaited before answering, so errors found at the start of a
        # generation (overload, rejection) still get a proper HTTP status; a client that leaves
        # meanwhile frees its slot at once, not when the first token comes.
        first = await _unless_gone(anext(events), receive, shutdown)
    except BaseException:
        await events.aclose()
        raise

    async def sse() -> AsyncIterator[ServerSentEvent]:
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
            yield form.error(
                503,
                ErrorType.SHUTTING_DOWN,
                "the server is shutting down and the stream's grace period ended",
            )
        except EngineError as exc:
            yield form.error(exc.status_code, exc.error_type, exc.message)
        except Exception:
            logger.exception("stream failed")
            yield form.error(500, ErrorType.SERVER_ERROR, "internal server error")
        finally:
            if interrupted:  # the engine did not let the cancellation through: take it back
                task.uncancel()
            await events.aclose()  # on disconnect too: cancels the generation
            release()

    async def cleanup() -> None:  # also runs if the stream was never started
        await events.aclose()
        release()

    return _EventStream(
        sse(),
        ping=15,
        background=BackgroundTask(cleanup),
        send_timeout=send_timeout,
        # sse-starlette also sees uvicorn stopping, and cuts streams after its own grace
        # period: give the app's time to end them properly first.
        shutdown_grace_period=shutdown.grace + SHUTDOWN_MARGIN,
    )


def _to_sse(event: EngineEvent, model: str | None, call_index: int) -> ServerSentEvent:
    if isinstance(event, EngineText):
        return ServerSentEvent(StreamDelta(text=event.text).model_dump_json(), event=EVENT_DELTA)
    if isinstance(event, ToolCall):
        piece = StreamToolCall(
            index=call_index, id=event.id, name=event.name, arguments=event.arguments
        )
        return ServerSentEvent(piece.model_dump_json(), event=EVENT_TOOL_CALL)
    done = StreamDone(finish_reason=event.finish_reason, usage=event.usage, model=model)
    return ServerSentEvent(done.model_dump_json(exclude_none=True), event=EVENT_DONE)


def _error_event(error_type: str, message: str) -> ServerSentEvent:
    body = ErrorBody(error=error_detail(error_type, message))
    return ServerSentEvent(body.model_dump_json(exclude_none=True), event=EVENT_ERROR)
