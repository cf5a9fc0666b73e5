"""Running the app under uvicorn: in the foreground (``promptwire serve``) or in a background
thread on a free loopback port (``promptwire demo`` and the tests).

Both use uvicorn's h11 HTTP/1.1 implementation, named explicitly, through ``GuardedH11Protocol``:
uvicorn has a keep-alive timeout but no deadline for a request's head and no cap on open
connections, so a few hundred clients that connect and send nothing, or half a request line,
could hold every file descriptor the process may open. With it:

- a connection has ``header_timeout`` seconds, from when it opens or its last answer ends, to
  send a complete request head (request line and headers); a slow drip does not reset the clock.
  Then it is closed, with a JSON 408 if it had begun a request. Leftover body after an answer is
  bounded the same way; the app bounds a body it reads (``create_app(body_timeout=)``);
- at most ``max_connections`` connections are open. When one more comes, a connection that
  does no work makes room for it, as nginx drains its idle keep-alive connections when it runs
  out: an idle kept-alive connection first (closed as its keep-alive timeout would), else the
  one that has waited longest for its request head (a JSON 503, ``Retry-After: 1``, if it had
  begun one). Only when every connection is in a request is the new one answered with that 503
  and closed at once. The limit on open files is raised to fit, where the hard limit allows;
  otherwise the cap is lowered to what fits, with a warning;
- a connection whose answer has not moved for ``send_timeout`` seconds (its client reads
  nothing) is dropped, which ends its request or stream and cancels the generation;
- uvicorn's plain-text 400 for malformed HTTP is the protocol's JSON error, and a websocket
  upgrade is not made (``Upgrade`` is ignored): the request is answered like any other;
- no ``server`` banner; a graceful shutdown first gives the app's running requests and streams
  their grace period (``GracefulShutdown``), then closes what is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, ClassVar, cast

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from promptwire.protocol import ErrorBody, ErrorDetail, ErrorType
from promptwire.server._shutdown import SHUTDOWN_MARGIN, graceful_shutdown
from promptwire.server.observability._hookup import logs_requests
from promptwire.settings import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SEND_TIMEOUT,
)

STARTUP_TIMEOUT = 60.0
# Descriptors kept for what is not a client connection: the listening socket, logs, the engine's
# files and devices.
RESERVED_DESCRIPTORS = 128

logger = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class ConnectionLimits:
    """What a connection may do before ``promptwire serve`` closes it (see the module)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT
    """None: no deadline (as ``ServerLimits.send_timeout``)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def _raw_error(status: int, reason: str, error_type: str, message: str, **headers: str) -> bytes:
    """A whole HTTP/1.1 answer, written before or outside uvicorn's request cycle."""
    error = ErrorBody(error=ErrorDetail(type=error_type, message=message))
    body = error.model_dump_json(exclude_none=True)
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "x-content-type-options: nosniff",
        "connection: close",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


_OVER_CAPACITY = _raw_error(
    503,
    "Service Unavailable",
    ErrorType.OVERLOADED,
    "the server has as many connections open as it allows; try again",
    retry_after="1",
)
_MALFORMED = _raw_error(400, "Bad Request", ErrorType.BAD_REQUEST, "malformed HTTP request")
_HEAD_TIMED_OUT = _raw_error(
    408, "Request Timeout", ErrorType.REQUEST_TIMEOUT, "the request's head did not arrive in time"
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline, a connection cap, a send timeout and
    JSON answers for what uvicorn refuses itself. ``limits`` is set on a subclass per server
    (``protocol_class``)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._refused = False
        self._waiting_since = 0.0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None

    # -- the connection cap ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports implement asyncio.Transport's methods without
        # subclassing it (an assertion here refused every connection once uvloop was installed).
        transport = cast(asyncio.Transport, transport)
        if len(self.connections) >= self.limits.max_connections and not self._shed_one():
            self._refused = True
            self.transport = transport
            transport.write(_OVER_CAPACITY)
            transport.close()
            return
        super().connection_made(transport)
        self._waiting_since = self.loop.time()
        self._arm_head_deadline()  # a connection that sends nothing never calls us again

    def _shed_one(self) -> bool:
        """Close the connection that costs least to lose, to make room for a new one: an idle
        kept-alive connection, else the one that has waited longest for its request head. False
        when every connection is in a request (none is closed)."""
        victim: GuardedH11Protocol | None = None
        best: tuple[int, float] | None = None
        for connection in self.connections:
            if not isinstance(connection, GuardedH11Protocol):
                continue
            rank = connection._shedding_rank()
            if rank is not None and (best is None or rank < best):
                victim, best = connection, rank
        if victim is None:
            return False
        victim._shed()
        return True

    def _shedding_rank(self) -> tuple[int, float] | None:
        """(0, since) for an idle kept-alive connection, (1, since) for one still sending its
        request head (or a body left over after its answer), None for one in a request."""
        if not self._waiting_for_client():
            return None
        idle = (
            self.cycle is not None
            and self.conn.their_state is h11.IDLE
            and not self.conn.trailing_data[0]
        )
        return (0 if idle else 1), self._waiting_since

    def _shed(self) -> None:
        # Out of the count now: its connection_lost comes on a later turn of the loop.
        self.connections.discard(self)
        self._cancel_head_deadline()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.transport.write(_OVER_CAPACITY)  # half a request: say why it ends
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        cycle = self.cycle
        if self._head_deadline is None and cycle is not None and not cycle.response_complete:
            return  # in a request, as most data leaves it: no deadline to set or to cancel
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        self._cancel_send_deadline()
        if self._refused:
            return
        super().connection_lost(exc)

    # -- the request-head deadline --------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = self.loop.time()
        # An idle connection is closed by the keep-alive timeout; the deadline is needed once
        # something of the next request, or the rest of this one's body, is in. Most requests
        # arrive whole, and then no timer is made for them at all.
        if self._waiting_for_client() and (
            self.conn.their_state is h11.SEND_BODY or self.conn.trailing_data[0]
        ):
            self._watch_head()

    def _should_upgrade(self) -> bool:
        """Never: the protocol has no websocket endpoint, so ``Upgrade`` is ignored (RFC 9110
        7.8) and the request answered as plain HTTP, in JSON like any other."""
        return False

    def _waiting_for_client(self) -> bool:
        """True between requests: before a request head is complete, or while the body of an
        answered request is still coming in."""
        if self.transport.is_closing():
            return False
        answered = self.cycle is None or self.cycle.response_complete
        return answered and self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _watch_head(self) -> None:
        if not self._waiting_for_client():
            self._cancel_head_deadline()
        elif self._head_deadline is None:
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        # From when the wait began, however many bytes have come since: a drip does not extend it.
        self._head_deadline = self.loop.call_at(
            self._waiting_since + self.limits.header_timeout, self._head_timed_out
        )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self._waiting_for_client():
            return
        begun = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if begun:  # half a request: say why it ends
            self.transport.write(_HEAD_TIMED_OUT)
        self.transport.close()

    # -- the send timeout ------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        timeout = self.limits.send_timeout
        if self._send_deadline is None and timeout is not None:
            self._send_deadline = self.loop.call_later(timeout, self._send_stalled)

    def resume_writing(self) -> None:
        self._cancel_send_deadline()
        super().resume_writing()

    def _cancel_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _send_stalled(self) -> None:
        """The client has read nothing for ``send_timeout``: drop the connection. ``abort``, not
        ``close``: closing would wait for the unread answer to drain, which it never does."""
        self._send_deadline = None
        logger.info(
            "a client read nothing for %g s; its connection was dropped", self.limits.send_timeout
        )
        self.transport.abort()

    # -- JSON for what uvicorn answers itself ----------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        if self.cycle is None or self.cycle.response_complete:  # not inside another answer
            self.transport.write(_MALFORMED)
        self.transport.close()


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


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """``GuardedH11Protocol`` with ``limits``, for one server's ``uvicorn.Config(http=)``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


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
) -> uvicorn.Config:
    """The uvicorn configuration of a promptwire server; ``limits=None`` runs plain uvicorn
    (how the tests see what the app alone guarantees, as under Modal)."""
    shutdown = graceful_shutdown(app)
    grace = shutdown.grace if shutdown is not None else 0.0
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=not logs_requests(app),  # promptwire's request log says more, once
        http="h11" if limits is None else protocol_class(limits),
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
) -> None:
    """Serve ``app`` until interrupted."""
    limits = limits or ConnectionLimits()
    wanted = limits.max_connections
    limits = replace(limits, max_connections=fit_descriptors(wanted))
    config = server_config(app, host=host, port=port, log_level=log_level, limits=limits)
    if limits.max_connections < wanted:  # said once logging is set up
        logger.warning(
            "too few open files allowed (ulimit -n) for %d connections: at most %d at once",
            wanted,
            limits.max_connections,
        )
    _server(config).run()


class BackgroundServer:
    """A real uvicorn server in a thread; ``url`` is its base URL once started. It has the same
    connection limits as ``promptwire serve`` unless ``limits=None`` (plain uvicorn).

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
        limits: ConnectionLimits | None = ConnectionLimits(),
    ) -> None:
        config = server_config(app, host=host, port=port, log_level=log_level, limits=limits)
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
