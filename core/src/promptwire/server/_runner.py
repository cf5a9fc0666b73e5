"""Running the app under uvicorn: in the foreground (``promptwire serve``) or in a background
thread on a free loopback port (``promptwire demo`` and the tests), with ``promptwire serve``'s
connection guards (``promptwire.server._connections``) on the parser it names. The limit on
open files is raised to fit the connection cap, where the hard limit allows; otherwise the cap
is lowered to what fits, with a warning. No ``server`` banner; a graceful shutdown first gives
the app's running requests and streams their grace period (``GracefulShutdown``), then closes
what is left.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from promptwire.server._connections import protocol_class
from promptwire.server._shutdown import SHUTDOWN_MARGIN, graceful_shutdown
from promptwire.server.observability._hookup import logs_requests
from promptwire.settings import ConnectionLimits, HttpParser

STARTUP_TIMEOUT = 60.0
# Descriptors kept for what is not a client connection: the listening socket, logs, the engine's
# files and devices.
RESERVED_DESCRIPTORS = 128

logger = logging.getLogger("uvicorn.error")
SERVE_LIMITS = ConnectionLimits()
"""``promptwire serve``'s defaults."""


def loopback_host_names(bind: str) -> frozenset[str] | None:
    """The ``Host`` names a server bound to ``bind`` answers to, if that is a loopback address
    (``create_app(allowed_hosts=)``); None (any name) for other addresses. A page on a foreign
    name that resolves to 127.0.0.1 (DNS rebinding) then gets no answer from this machine."""
    name = bind.strip("[]").lower()
    if name != "localhost":
        try:
            if not ipaddress.ip_address(name).is_loopback:
                return None
        except ValueError:
            return None
    return frozenset({"localhost", "127.0.0.1", "::1", name})


def fit_descriptors(max_connections: int) -> int:
    """Raise this process's limit on open files so that ``max_connections`` fit, as far as the
    hard limit allows; return how many connections really fit."""
    try:
        import resource
    except ImportError:  # not on Unix
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_DESCRIPTORS
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    return max(1, min(max_connections, soft - RESERVED_DESCRIPTORS))


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    limits: ConnectionLimits | None = None,
    http: HttpParser = "auto",
) -> uvicorn.Config:
    """The uvicorn configuration of a promptwire server: ``limits`` guarded on parser ``http``;
    ``limits=None`` runs plain uvicorn on h11 (how the tests see what the app alone guarantees,
    as under Modal)."""
    shutdown = graceful_shutdown(app)
    grace = shutdown.grace if shutdown is not None else 0.0
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=not logs_requests(app),  # promptwire's request log says more, once
        http="h11" if limits is None else protocol_class(limits, http),
        ws="auto" if limits is None else "none",
        lifespan="on",
        server_header=False,
        timeout_keep_alive=(limits or ConnectionLimits()).keep_alive_timeout,
        # Past the app's grace period (after which it ends its requests and streams itself),
        # uvicorn cancels whatever is still running.
        timeout_graceful_shutdown=math.ceil(grace + 2 * SHUTDOWN_MARGIN),
    )


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when a graceful shutdown begins."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)


def _server(config: uvicorn.Config) -> uvicorn.Server:
    shutdown = graceful_shutdown(config.app)
    return _Server(config, shutdown.begin if shutdown is not None else None)


def run_server(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    limits: ConnectionLimits | None = None,
    http: HttpParser = "auto",
) -> None:
    """Serve ``app`` until interrupted."""
    limits = limits or ConnectionLimits()
    wanted = limits.max_connections
    limits = limits.model_copy(update={"max_connections": fit_descriptors(wanted)})
    config = server_config(app, host=host, port=port, log_level=log_level, limits=limits, http=http)
    if limits.max_connections < wanted:  # said once logging is set up
        logger.warning(
            "too few open files allowed (ulimit -n) for %d connections: at most %d at once",
            wanted,
            limits.max_connections,
        )
    quiet = _StartupFailureFilter(app)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(quiet)
    try:
        _server(config).run()
    except SystemExit:  # uvicorn's exit status 3 when the app's startup failed
        if getattr(app.state, "startup_error", None) is None:
            raise
    finally:
        uvicorn_log.removeFilter(quiet)
    if (error := getattr(app.state, "startup_error", None)) is not None:
        raise error  # one line from the command, not uvicorn's traceback and "startup failed"


class _StartupFailureFilter(logging.Filter):
    """Keeps uvicorn quiet about an engine that could not start for a reason promptwire states
    itself (a ``PromptwireError`` or ``EngineError``: a model file, a setting, an engine process
    that died while starting): ``run_server`` raises it instead."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self._app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(self._app.state, "startup_error", None) is None


class BackgroundServer:
    """A real uvicorn server in a thread; ``url`` is its base URL once started. It has the same
    connection limits as ``promptwire serve`` (on parser ``http``) unless ``limits=None``
    (plain uvicorn).

    >>> with BackgroundServer(app) as server:
    ...     httpx.post(server.url, json={"prompt": "hi"})
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        limits: ConnectionLimits | None = SERVE_LIMITS,
        http: HttpParser = "auto",
    ) -> None:
        config = server_config(
            app, host=host, port=port, log_level=log_level, limits=limits, http=http
        )
        self._server = _server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="promptwire-server", daemon=True
        )
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server stopped while starting (is the port free?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {STARTUP_TIMEOUT:g}s")
            time.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
