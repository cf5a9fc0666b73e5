"""The ASGI app factory: any engine served by every protocol's routes.

``create_app`` makes the app's ``ServingState`` (the engine wrapped by the observer, the limits,
the shared slots, the shutdown) and adds each protocol's routes from it: the prompt endpoint
protocol (``_prompt_routes``: ``POST /``, ``GET /health``), the OpenAI API (``openai._routes``:
Completions, Chat Completions; ``openai._responses_routes``: Responses), Anthropic's Messages
API (``anthropic._routes``) and the console page (``console``: ``GET /console``), plus the auth,
the request guard, the error handlers and the observer that hold for all of them. Every error is
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

from promptwire.client import check_header_secret
from promptwire.engine import (
    Engine,
    EngineError,
)
from promptwire.errors import PromptwireError
from promptwire.modal import coldstart
from promptwire.protocol import (
    PROTOCOL_VERSION,
    ErrorType,
)
from promptwire.server._app_route import AppRoute
from promptwire.server._errors import STATUS_ERROR_TYPES, RequestError, error_response
from promptwire.server._guard import HEALTH_PATH, BearerAuth, RequestGuard
from promptwire.server._prompt_routes import add_prompt_routes
from promptwire.server._shutdown import (
    GracefulShutdown,
)
from promptwire.server._slots import RequestSlots
from promptwire.server._state import ServingState
from promptwire.server._streaming import Preparer
from promptwire.server.console import SHELL_PATHS, add_console_routes
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


#: The generating routes, in the order the app tries them: the prompt route, then the APIs
#: by how many clients speak them (Chat Completions; Anthropic's Messages, which Claude's SDKs
#: and coding agents speak; Responses), then the legacy Completions.
GENERATING_ROUTES = (
    "/",
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1/completions",
)


def create_app(
    engine: Engine[Any],
    *,
    api_key: str | SecretStr | None = None,
    limits: ServerLimits | None = None,
    allowed_hosts: Collection[str] | None = None,
    observability: Observability | None = None,
    console: bool = True,
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
    (``promptwire.server.observability``); None: the defaults. ``console``: serve the
    console page, ``GET /console`` (``promptwire.server.console``; its shell without the key).
    """
    bounds = server_limits(limits, **limit_arguments)
    shutdown = GracefulShutdown(bounds.shutdown_grace)
    state: ServingState  # made once the engine is wrapped by the observer, below

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        engine = state.engine
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
        state.started = True
        _freeze_startup_heap()
        try:
            yield
        finally:
            state.started = False
            gc.unfreeze()
            await engine.stop()

    app = FastAPI(
        title="promptwire prompt endpoint",
        version=PROTOCOL_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,  # "/health/" is not found; no redirect built from a Host header
        # FastAPI's own OpenTelemetry bridge (0.165 and later) is off: it would record spans
        # whenever the process has a tracer provider, promptwire's setting on or off, and it
        # asks the providers on every request (about 250 bytecodes). promptwire's
        # observability traces when asked (Observability.opentelemetry).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.router.route_class = AppRoute  # before any route is added
    app.state.graceful_shutdown = shutdown
    app.state.limits = bounds
    options = observability or Observability()
    token = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    if token:
        # A key no client can send (a space, a trailing newline) would lock every client out.
        check_header_secret("the API key (PROMPTWIRE_API_KEY, --api-key)", token)
        open_paths = options.public_paths(HEALTH_PATH) | (SHELL_PATHS if console else frozenset())
        app.add_middleware(BearerAuth, token=token, open_paths=open_paths)
    # The outermost but the observer.
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts)
    state = ServingState(
        engine=observe(app, engine, options),  # adds /metrics and the request observer
        limits=bounds,
        slots=RequestSlots(bounds.max_in_flight),
        shutdown=shutdown,
        preparer=Preparer(),
    )
    app.state.serving = state

    @app.exception_handler(RequestError)
    async def _on_request_error(request: Request, exc: RequestError) -> Response:
        return error_response(
            exc.status_code,
            exc.error_type,
            exc.message,
            exc.retry_after,
            close=exc.close,
            scope=request.scope,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error_type = STATUS_ERROR_TYPES.get(exc.status_code, ErrorType.INVALID_REQUEST)
        return error_response(
            exc.status_code, error_type, str(exc.detail), headers=exc.headers, scope=request.scope
        )

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(
            422, ErrorType.INVALID_REQUEST, "invalid request", scope=request.scope
        )

    # Imported here: the protocols' packages import the server's parts.
    from promptwire.server.anthropic._routes import add_anthropic_routes
    from promptwire.server.openai._responses_routes import add_responses_routes
    from promptwire.server.openai._routes import add_openai_routes

    add_prompt_routes(app, state)
    add_openai_routes(app, state)
    add_responses_routes(app, state)
    add_anthropic_routes(app, state)
    if console:
        add_console_routes(app, state)
    # A request tries the routes in order until one matches (about 35 bytecodes for each it
    # passes, ``AppRoute``): the generating routes go first, in ``GENERATING_ROUTES``'
    # order, then the other POST routes, then /openapi.json, /metrics, /health, /v1/models and
    # the console (paths are distinct, so the order changes nothing else; benchmark 8).
    first = {path: rank for rank, path in enumerate(GENERATING_ROUTES)}
    app.router.routes.sort(
        key=lambda route: (
            first.get(getattr(route, "path", ""), len(first)),
            "POST" not in (getattr(route, "methods", None) or ()),
        )
    )
    return app
