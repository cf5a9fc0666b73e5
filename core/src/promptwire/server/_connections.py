"""What ``promptwire serve`` bounds per connection, on either of uvicorn's HTTP/1.1 parsers.

uvicorn has a keep-alive timeout but no deadline for a request's head and no cap on open
connections, so a few hundred clients that connect and send nothing, or half a request line,
could hold every file descriptor the process may open. ``ConnectionGuard`` adds, over uvicorn's
httptools protocol (llhttp, in C: the default where it is installed) and over its h11 protocol
(pure Python, the fallback):

- a connection has ``header_timeout`` seconds, from when it opens or its last answer ends, to
  send a complete request head (request line and headers); a slow drip does not reset the clock.
  Then it is closed, with a JSON 408 if it had begun a request. Leftover body after an answer is
  bounded the same way; the app bounds a body it reads (``create_app(body_timeout=)``);
- at most ``max_connections`` connections are open. When one more comes, a connection that
  does no work makes room for it, as nginx drains its idle keep-alive connections when it runs
  out: an idle kept-alive connection first (closed as its keep-alive timeout would), else the
  one that has waited longest for its request head (a JSON 503, ``Retry-After: 1``, if it had
  begun one). Only when every connection is in a request is the new one answered with that 503
  and closed at once;
- a connection whose answer has not moved for ``send_timeout`` seconds (its client reads
  nothing) is dropped, which ends its request or stream and cancels the generation;
- a request head (request line and headers) is at most ``max_header_bytes`` and
  ``max_headers`` lines: beyond, a JSON 431 and the connection is closed. h11 bounds a head
  still arriving by itself (set to the same size) but not one that comes in a single read, and
  llhttp bounds neither: it hands each header over whole, however many megabytes it took, and
  httptools grows a bytes object for it. So both parsers check each finished head, and on
  httptools the bytes of a head still arriving are counted as they come;
- uvicorn's plain-text 400 for malformed HTTP is the protocol's JSON error, and a websocket
  upgrade is not made (``Upgrade`` is ignored): the request is answered like any other, and on
  httptools its connection then closes (llhttp stops parsing after an upgrade request).

The two subclasses differ only in how they read their parser's state: where a connection is
between requests, and whether it has begun a request head.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, ClassVar, Literal, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from promptwire.errors import ConfigurationError
from promptwire.protocol import ErrorBody, ErrorDetail, ErrorType
from promptwire.settings import ConnectionLimits, HttpParser

logger = logging.getLogger("uvicorn.error")


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
_HEAD_TOO_LARGE = _raw_error(
    431,
    "Request Header Fields Too Large",
    ErrorType.TOO_LARGE,
    "the request's headers are over the server's limit on their size or number",
)

#: What a header line costs beyond its name and value: ``": "`` and CRLF.
HEADER_LINE_OVERHEAD = 4


def head_size(target: bytes, headers: Any) -> int:
    """A parsed request head's size in bytes, as sent (to within its optional whitespace)."""
    return len(target) + sum(len(n) + len(v) + HEADER_LINE_OVERHEAD for n, v in headers)


class HeadTooLarge(Exception):
    """Raised in llhttp's callback to stop it at a head over the limits."""


class ConnectionGuard(asyncio.Protocol):
    """The guards, mixed in before one of uvicorn's HTTP protocols. ``limits`` is set on a
    subclass per server (``protocol_class``)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # uvicorn's protocols set these.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    # Per connection (each assignment makes the connection's own).
    _refused = False
    _head_too_large = False
    _waiting_since = 0.0
    _head_deadline: asyncio.TimerHandle | None = None
    _send_deadline: asyncio.TimerHandle | None = None

    # -- what the parser says (one pair per parser) ---------------------------------------------

    def _parser_between_requests(self) -> bool:
        """The parser waits for a request head, or reads the body of an answered request."""
        raise NotImplementedError

    def _head_begun(self) -> bool:
        """Part of a request head is in, not all of it."""
        raise NotImplementedError

    def _body_left(self) -> bool:
        """Body of an answered request is still to come."""
        raise NotImplementedError

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
        victim: ConnectionGuard | None = None
        best: tuple[int, float] | None = None
        for connection in self.connections:
            if not isinstance(connection, ConnectionGuard):
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
        idle = self.cycle is not None and not self._head_begun() and not self._body_left()
        return (0 if idle else 1), self._waiting_since

    def _shed(self) -> None:
        # Out of the count now: its connection_lost comes on a later turn of the loop.
        self.connections.discard(self)
        self._cancel_head_deadline()
        if self._head_begun():  # half a request: say why it ends
            self.transport.write(_OVER_CAPACITY)
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
        super().on_response_complete()  # type: ignore[misc]
        self._waiting_since = self.loop.time()
        # An idle connection is closed by the keep-alive timeout; the deadline is needed once
        # something of the next request, or the rest of this one's body, is in. Most requests
        # arrive whole, and then no timer is made for them at all.
        if self._waiting_for_client() and (self._body_left() or self._head_begun()):
            self._watch_head()

    def _should_upgrade(self) -> bool:
        """Never: the protocol has no websocket endpoint, so ``Upgrade`` is ignored (RFC 9110
        7.8) and the request answered as plain HTTP, in JSON like any other."""
        return False

    def _unsupported_upgrade_warning(self) -> None:
        """Nothing to warn about: an ``Upgrade`` is ignored by design."""

    def _waiting_for_client(self) -> bool:
        """True between requests: before a request head is complete, or while the body of an
        answered request is still coming in."""
        if self.transport.is_closing():
            return False
        answered = self.cycle is None or self.cycle.response_complete
        return answered and self._parser_between_requests()

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
        if self._head_begun():  # half a request: say why it ends
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

    def _refuse_head(self) -> None:
        """Answer 431 to a head over the limits and close the connection."""
        if self._head_too_large:
            return
        self._head_too_large = True
        self._cancel_head_deadline()
        logger.info("a request head over the limits was refused (431)")
        self._end_with(_HEAD_TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:  # the parser stopped at our refusal, already answered
            self.transport.close()
        else:
            self._end_with(_MALFORMED)

    def _end_with(self, answer: bytes) -> None:
        """Answer what the parser refused and close the connection."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            # Not inside another answer (a pipelined request's, say). A request whose head
            # parsed but whose body did not (a bad chunk), or one the refused request was
            # pipelined behind, is already with the app: it is told its client left, so that
            # it answers no one and its generation ends.
            self.transport.write(answer)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self.transport.close()


class _BoundedH11Connection(h11.Connection):
    """h11's connection, refusing a request head over ``limits`` (``head_too_large`` says it
    did). h11 itself refuses a head still incomplete past ``max_incomplete_event_size`` bytes;
    a head that comes whole in one read is checked here once parsed."""

    head_too_large = False

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._limits = limits

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.head_too_large = exc.error_status_hint == 431  # h11's receive buffer is full
            raise
        if isinstance(event, h11.Request) and self._limits.head_over(
            len(event.headers), head_size(event.target, event.headers)
        ):
            self.head_too_large = True
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


class GuardedH11Protocol(ConnectionGuard, H11Protocol):
    """uvicorn's h11 protocol, guarded; h11 keeps the state the guards read."""

    conn: h11.Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _BoundedH11Connection(self.limits)

    def send_400_response(self, msg: str) -> None:
        if isinstance(self.conn, _BoundedH11Connection) and self.conn.head_too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _parser_between_requests(self) -> bool:
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _head_begun(self) -> bool:
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

    def _body_left(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY


class _Message(enum.Enum):
    """Where llhttp is in the current request, from its callbacks."""

    NONE = enum.auto()  # between requests
    HEAD = enum.auto()  # its request line or headers
    BODY = enum.auto()  # its body


def _httptools_protocol() -> type[ConnectionGuard]:
    """``GuardedHttpToolsProtocol``, built on first use: httptools is optional."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(ConnectionGuard, HttpToolsProtocol):
        """uvicorn's httptools protocol, guarded; llhttp keeps no state it shows, so its
        callbacks record where the current request is; the bytes of a head still arriving
        are counted as they come."""

        _message = _Message.NONE
        _head_bytes = 0  # of the head still arriving, in the reads after the one it began in
        _read = 0  # the size of the read being parsed
        _began = False  # the current head began in the read being parsed

        def data_received(self, data: bytes) -> None:
            if self._head_too_large:
                return
            self._began = False
            self._read = len(data)
            super().data_received(data)
            if self._message is not _Message.HEAD or self._head_too_large:
                return
            # The head goes on past this read. llhttp hands a header over only once it ends,
            # so its bytes are counted here: all of a read inside the head; of the read it began
            # in, none (that much more, at most one read, may come before it is refused).
            if not self._began:
                self._head_bytes += len(data)
                if self._head_bytes > self.limits.max_header_bytes:
                    self._refuse_head()

        def on_message_begin(self) -> None:
            self._message = _Message.HEAD
            self._began = True
            self._head_bytes = 0
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            # The whole head is in: check it before the app sees the request, its size only
            # where it could be over (a head that came in one read at most the limit cannot).
            limits = self.limits
            if len(self.headers) > limits.max_headers or (
                (not self._began or self._read > limits.max_header_bytes)
                and head_size(self.url, self.headers) > limits.max_header_bytes
            ):
                self._refuse_head()
                raise HeadTooLarge  # stops llhttp; uvicorn then calls ``send_400_response``
            self._message = _Message.BODY
            super().on_headers_complete()
            if self.parser.should_upgrade():
                # llhttp parses nothing after an upgrade request: end the connection with it.
                self.cycle.keep_alive = False

        def on_message_complete(self) -> None:
            self._message = _Message.NONE
            super().on_message_complete()

        def _parser_between_requests(self) -> bool:
            return True  # once answered, whatever comes is the next request or this one's rest

        def _head_begun(self) -> bool:
            return self._message is _Message.HEAD

        def _body_left(self) -> bool:
            return self._message is _Message.BODY

    return GuardedHttpToolsProtocol


def httptools_available() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_parser(http: HttpParser) -> Literal["h11", "httptools"]:
    """``auto``: httptools where it is installed (it comes with the ``server`` extra on
    CPython), else h11. Naming httptools where it is missing is an error that says so."""
    if http == "auto":
        return "httptools" if httptools_available() else "h11"
    if http == "httptools" and not httptools_available():
        raise ConfigurationError(
            "PROMPTWIRE_HTTP=httptools, but httptools is not installed: "
            "pip install 'promptwire[server]' (CPython), or use h11"
        )
    return http


def protocol_class(limits: ConnectionLimits, http: HttpParser = "auto") -> type[ConnectionGuard]:
    """The guarded protocol of parser ``http`` with ``limits``, for ``uvicorn.Config(http=)``."""
    base = GuardedH11Protocol if resolve_parser(http) == "h11" else _httptools_protocol()
    return type(base.__name__, (base,), {"limits": limits})
