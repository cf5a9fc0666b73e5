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
``promptwire.server._connections``.
"""

from __future__ import annotations

import gc
from collections.abc import (
    AsyncIterator,
    Collection,
)
from contextlib import asynccontextmanager
from typing import Any, TypedDict, Unpack

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from promptwire.engine import (
    Engine,
    EngineError,
    EngineNotReady,
    EngineOverloaded,
    check_capabilities,
    render_request,
)
from promptwire.errors import PromptwireError
from promptwire.modal import coldstart
from promptwire.protocol import (
    PROTOCOL_VERSION,
    ErrorBody,
    ErrorType,
    Health,
    PromptRequest,
    PromptResponse,
)
from promptwire.server._answer import Answer, answer_in_slots, read_or_gone
from promptwire.server._errors import STATUS_ERROR_TYPES, RequestError, error_response
from promptwire.server._guard import HEALTH_PATH, BearerAuth, RequestGuard
from promptwire.server._request_body import (
    parse_request,
    read_body,
    request_body_schema,
    require_json,
)
from promptwire.server._shutdown import (
    GracefulShutdown,
)
from promptwire.server._slots import RETRY_AFTER_SECONDS, RequestSlots
from promptwire.server._streaming import Preparer, prepare, stream_reply, whole_reply
from promptwire.server.observability._hookup import Observability, observe
from promptwire.settings import SERVER_LIMIT_FIELDS, ServerLimits


def _freeze_startup_heap() -> None:
    """Put what start-up left alive (modules, the app, the engine's objects) out of the cyclic
    garbage collector's reach. Otherwise every full collection rescans all of it while requests
    wait: 25-35 ms each on a small machine, under load often enough to set the p99 latency."""
    gc.collect()
    gc.freeze()


class LimitArguments(TypedDict, total=False):
    """``create_app``'s keyword arguments for single limits (those of ``ServerLimits``, in its
    order: ``send_timeout``, shared with the connection limits, first)."""

    send_timeout: float | None
    max_body_bytes: int
    max_in_flight: int | None
    body_timeout: float | None
    shutdown_grace: float


def server_limits(
    limits: ServerLimits | None = None, **changes: Unpack[LimitArguments]
) -> ServerLimits:
    """``limits`` (default: the defaults) with ``changes``, checked as ``ServerLimits`` checks
    them. A subclass such as ``PromptwireSettings`` gives just its limits."""
    values = (limits or ServerLimits()).model_dump(include=set(SERVER_LIMIT_FIELDS))
    return ServerLimits.model_validate({**values, **changes})


def create_app(
    engine: Engine[Any],
    *,
    api_key: str | SecretStr | None = None,
    limits: ServerLimits | None = None,
    allowed_hosts: Collection[str] | None = None,
    observability: Observability | None = None,
    **limit_arguments: Unpack[LimitArguments],
) -> FastAPI:
    """Build the protocol app for ``engine``. The app's lifespan starts and stops the engine.

    ``limits``: what the app bounds (``promptwire.settings.ServerLimits``; ``PromptwireSettings``
    is one, so ``promptwire serve`` and the Modal containers pass theirs); a single limit given
    as a keyword (``max_in_flight=4``) beats it. The limits the app runs with are
    ``app.state.limits``. ``shutdown_grace`` is the time running requests get once the server
    stopping them calls ``begin`` on ``graceful_shutdown(app)``. ``allowed_hosts``: the only
    ``Host`` names answered (for a server bound to loopback); None answers any.
    ``observability``: metrics, the request log and traces
    (``promptwire.server.observability``); None: the defaults.
    """
    bounds = server_limits(limits, **limit_arguments)
    max_body_bytes, max_in_flight = bounds.max_body_bytes, bounds.max_in_flight
    body_timeout, send_timeout = bounds.body_timeout, bounds.send_timeout
    shutdown_grace = bounds.shutdown_grace

    shutdown = GracefulShutdown(shutdown_grace)
    preparer = Preparer()  # shared with the OpenAI routes
    started = False  # the engine is served only between its start() and its stop()

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        nonlocal started
        shutdown.reset()
        try:
            if engine.ready:
                await engine.start()  # started already (a Modal container's enter hook)
            else:
                with coldstart.phase("engine_start"):
                    await engine.start()
        except (PromptwireError, EngineError) as exc:  # said in one line by promptwire serve
            served.state.startup_error = exc
            raise
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
    app.state.limits = bounds
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
        error_type = STATUS_ERROR_TYPES.get(exc.status_code, ErrorType.INVALID_REQUEST)
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
                503, ErrorType.NOT_READY, engine.not_ready_reason, RETRY_AFTER_SECONDS
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
                "content": {"application/json": {"schema": request_body_schema()}},
            }
        },
    )
    async def generate(request: Request) -> Response:
        require_json(request)
        body = await read_or_gone(read_body(request, max_body_bytes, body_timeout))
        if isinstance(body, Response):
            return body
        prompt_request = parse_request(body)
        if not serving():
            raise RequestError.from_engine(
                EngineNotReady(engine.not_ready_reason, retry_after=RETRY_AFTER_SECONDS)
            )
        try:
            release = slots.take()
        except EngineOverloaded as exc:
            raise RequestError.from_engine(exc) from None

        async def answer() -> Answer:
            check_capabilities(engine, prompt_request)
            if prompt_request.messages is None and engine.prepares_quickly:
                job = prepare(engine, prompt_request)  # returns at once: no thread's round trip
            else:
                job = await preparer.run(
                    lambda: prepare(engine, _render_messages(engine, prompt_request))
                )
            if prompt_request.stream:
                return Answer(
                    await stream_reply(
                        engine, job, request.receive, release, shutdown, send_timeout
                    ),
                    keeps_slots=True,
                )
            return Answer(await whole_reply(engine, job, request.receive, shutdown))

        return await answer_in_slots(release, answer, RequestError.from_engine)

    # Imported here: the OpenAI routes are built from this module's parts.
    from promptwire.server.openai._routes import add_openai_routes

    add_openai_routes(
        app,
        engine,
        serving=serving,
        slots=slots,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        send_timeout=send_timeout,
        shutdown=shutdown,
        preparer=preparer,
    )
    # A request tries the routes in order until one matches: the prompt route, which nearly
    # every request is for, goes before /openapi.json, /metrics and /health (paths are distinct,
    # so the order changes nothing else).
    app.router.routes.sort(key=lambda route: getattr(route, "endpoint", None) is not generate)
    return app


def _render_messages(engine: Engine[Any], request: PromptRequest) -> PromptRequest:
    """Protocol v1.1: a request with ``messages`` is served with their rendering as its prompt
    (v1.2: with its tools, for an engine that takes them)."""
    if request.messages is None:
        return request
    return request.model_copy(update={"prompt": render_request(engine, request)})
