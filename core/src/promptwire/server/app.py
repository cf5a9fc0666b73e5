"""The ASGI app factory: the prompt endpoint protocol served for any engine.

``POST /`` answers a whole reply or, with ``"stream": true``, server-sent events; ``GET /health``
answers once the engine is ready (v1.2: with the engine's capabilities). A v1.1 request's
``messages`` are rendered by the engine's chat template and served in place of its ``prompt``; a
v1.2 request's tools and response format are refused (422) unless the engine declares them, and
its tool calls come back in the reply (``tool_calls``) or as ``tool_call`` events. Every error is
the protocol's JSON error, never a stack trace. A client that disconnects cancels its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import SecretStr, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
from promptwire.server.openai_routes import add_openai_routes
from promptwire.server.slots import RequestSlots

logger = logging.getLogger(__name__)

HEALTH_PATH = "/health"
RETRY_AFTER_SECONDS = 1
_STATUS_ERROR_TYPES = {
    401: ErrorType.UNAUTHORIZED,
    404: ErrorType.NOT_FOUND,
    405: ErrorType.METHOD_NOT_ALLOWED,
    413: ErrorType.TOO_LARGE,
    422: ErrorType.INVALID_REQUEST,
    503: ErrorType.OVERLOADED,
}


class RequestError(Exception):
    """A request the server refuses; carries the protocol error to answer with."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type or _STATUS_ERROR_TYPES.get(status_code, ErrorType.SERVER_ERROR)
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def from_engine(cls, exc: EngineError) -> RequestError:
        return cls(
            exc.status_code, exc.message, error_type=exc.error_type, retry_after=exc.retry_after
        )


def error_response(
    status_code: int, error_type: str, message: str, retry_after: float | None = None
) -> Response:
    body = ErrorBody(error=ErrorDetail(type=error_type, message=message))
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else {}
    if status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(
        body.model_dump_json(), status_code, headers=headers, media_type="application/json"
    )


class BearerAuth:
    """Pure ASGI middleware: every route but ``/health`` needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == HEALTH_PATH:
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


class InternalErrors:
    """Pure ASGI middleware: an unexpected exception is answered with the protocol's JSON 500 and
    goes no further. Starlette's own handler re-raises it after answering, and uvicorn then drops
    the keep-alive connection without ``Connection: close``, so a client's next request on it
    fails although the server never saw it. Logged once, here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            logger.exception("unexpected server error")
            if started:  # half a reply is out: only closing the connection can end it
                raise
            await error_response(500, ErrorType.SERVER_ERROR, "internal server error")(
                scope, receive, send
            )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is larger than the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the body is larger than the limit of {limit} bytes")
    return bytes(body)


# Where the request body's schema sits in the OpenAPI document. Its nested models stay in its own
# ``$defs``; pydantic's default refs (``#/$defs/ChatMessage``) would point at the document's root,
# where there is nothing, and tools that read the schema (schemathesis, client generators) fail.
_REQUEST_SCHEMA_POINTER = "#/paths/~1/post/requestBody/content/application~1json/schema"


def _request_body_schema() -> dict[str, Any]:
    return PromptRequest.model_json_schema(ref_template=_REQUEST_SCHEMA_POINTER + "/$defs/{model}")


def _parse_request(body: bytes) -> PromptRequest:
    try:
        data = json.loads(body)
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


async def _until_disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _freeze_startup_heap() -> None:
    """Put what start-up left alive (modules, the app, the engine's objects) out of the cyclic
    garbage collector's reach. Otherwise every full collection rescans all of it while requests
    wait: 25-35 ms each on a small machine, under load often enough to set the p99 latency."""
    gc.collect()
    gc.freeze()


def create_app(
    engine: Engine,
    *,
    api_key: str | SecretStr | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_in_flight: int | None = None,
) -> FastAPI:
    """Build the protocol app for ``engine``. The app's lifespan starts and stops the engine."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        _freeze_startup_heap()
        try:
            yield
        finally:
            gc.unfreeze()
            await engine.stop()

    app = FastAPI(
        title="promptwire prompt endpoint",
        version=PROTOCOL_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    token = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    if token:
        app.add_middleware(BearerAuth, token=token)
    app.add_middleware(InternalErrors)  # added last: the outermost, around auth too
    slots = RequestSlots(max_in_flight)

    @app.exception_handler(RequestError)
    async def _on_request_error(_: Request, exc: RequestError) -> Response:
        return error_response(exc.status_code, exc.error_type, exc.message, exc.retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        error_type = _STATUS_ERROR_TYPES.get(exc.status_code, ErrorType.INVALID_REQUEST)
        return error_response(exc.status_code, error_type, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(422, ErrorType.INVALID_REQUEST, "invalid request")

    @app.get(
        HEALTH_PATH,
        response_model=Health,
        responses={503: {"model": ErrorBody, "description": "Not ready yet"}},
    )
    async def health() -> Response:
        if not engine.ready:
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
            413: {"model": ErrorBody},
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
        prompt_request = _parse_request(await _read_body(request, max_body_bytes))
        if not engine.ready:
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
            prompt_request = _render_messages(engine, prompt_request)
            engine.check(prompt_request)
            if prompt_request.stream:
                response = await _stream_reply(engine, prompt_request, release)
                streaming = True  # the stream releases its slot when it ends
                return response
            return await _whole_reply(engine, prompt_request, request.receive)
        except EngineError as exc:
            raise RequestError.from_engine(exc) from None
        finally:
            if not streaming:
                release()

    add_openai_routes(app, engine, slots=slots, max_body_bytes=max_body_bytes)
    return app


def _render_messages(engine: Engine, request: PromptRequest) -> PromptRequest:
    """Protocol v1.1: a request with ``messages`` is served with their rendering as its prompt
    (v1.2: with its tools, for an engine that takes them)."""
    if request.messages is None:
        return request
    return request.model_copy(update={"prompt": render_request(engine, request)})


async def _whole_reply(
    engine: Engine, request: PromptRequest, receive: Callable[[], Awaitable[Any]]
) -> Response:
    generation = asyncio.ensure_future(engine.complete(request))
    watcher = asyncio.ensure_future(_until_disconnected(receive))
    try:
        await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not generation.done():
            generation.cancel()  # the client is gone (or we are shutting down): free the engine
            with contextlib.suppress(asyncio.CancelledError):
                await generation
    if generation.cancelled():
        return Response(status_code=499)
    completion = generation.result()
    reply = PromptResponse(
        prompt=completion.text,
        usage=completion.usage,
        finish_reason=completion.finish_reason,
        model=engine.model_name,
        tool_calls=[call.to_protocol() for call in completion.tool_calls] or None,
    )
    return Response(reply.model_dump_json(exclude_none=True), media_type="application/json")


async def _stream_reply(
    engine: Engine, request: PromptRequest, release: Callable[[], None]
) -> Response:
    events = engine.stream(request)
    try:
        # The first event is awaited before answering, so errors found at the start of a
        # generation (overload, rejection) still get a proper HTTP status.
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise

    async def sse() -> AsyncIterator[ServerSentEvent]:
        calls = 0
        try:
            event: EngineEvent | None = first
            while event is not None:
                yield _to_sse(event, engine.model_name, calls)
                calls += isinstance(event, ToolCall)
                event = await anext(events, None)
        except EngineError as exc:
            yield _error_event(exc.error_type, exc.message)
        except Exception:
            logger.exception("stream failed")
            yield _error_event(ErrorType.SERVER_ERROR, "internal server error")
        finally:
            await events.aclose()  # on disconnect too: cancels the generation
            release()

    async def cleanup() -> None:  # also runs if the stream was never started
        await events.aclose()
        release()

    return EventSourceResponse(sse(), ping=15, background=BackgroundTask(cleanup))


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
    body = ErrorBody(error=ErrorDetail(type=error_type, message=message))
    return ServerSentEvent(body.model_dump_json(), event=EVENT_ERROR)
