"""From what went wrong to promptwire's errors: one table, read top to bottom, first match wins.

Every failure of a call leaves as an ``EndpointError`` naming the endpoint, marked with whether
it is worth another try (``transient``) and whether the server may have run the request
(``may_have_run``: then it is repeated only with ``retry_unsafe``). Messages are redacted and the
original exception is not chained: its text and repr may quote a header (a token).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from promptwire.client._transport.reply_body import ReplyTooLarge, UnsupportedEncoding
from promptwire.client.sse import EventTooLarge
from promptwire.errors import (
    EndpointConnectError,
    EndpointError,
    EndpointTimeoutError,
    ProtocolError,
    ReplyTooLargeError,
)

SNIPPET_CHARS = 200
#: The most of a server's own error message (or type) an error repeats; the rest is cut.
MESSAGE_CHARS = 1000
TYPE_CHARS = 100
REDACTED = "**********"


@dataclass(frozen=True)
class Failure:
    """A row of the table: what was raised, what it becomes, and how it reads. ``{reason}`` is
    the exception's own text (redacted), ``{name}`` its class name."""

    raised: type[BaseException] | tuple[type[BaseException], ...]
    becomes: type[EndpointError]
    message: str
    transient: bool = False
    may_have_run: bool = True
    stale_if_unanswered: bool = False
    """On a reused connection with no reply begun, this is the server's close (see ``Turn``)."""


FAILURES: Sequence[Failure] = (
    Failure((ReplyTooLarge, EventTooLarge), ReplyTooLargeError, "{reason}"),
    Failure(
        (UnsupportedEncoding, zlib.error), ProtocolError, "the reply cannot be decoded: {reason}"
    ),
    Failure(
        httpx.ConnectTimeout,
        EndpointTimeoutError,
        "timed out connecting",
        transient=True,
        may_have_run=False,
    ),
    Failure(
        httpx.ConnectError,
        EndpointConnectError,
        "cannot connect: {reason}",
        transient=True,
        may_have_run=False,
    ),
    Failure(
        httpx.TimeoutException,
        EndpointTimeoutError,
        "timed out waiting for the reply ({name})",
        transient=True,
    ),
    Failure(httpx.TooManyRedirects, ProtocolError, "too many redirects"),
    Failure(
        (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError),
        EndpointConnectError,
        "the connection broke mid-reply: {reason}",
        transient=True,
        stale_if_unanswered=True,
    ),
    Failure(httpx.HTTPError, EndpointError, "{name}: {reason}"),
)


class StaleConnectionError(EndpointConnectError):
    """A reused kept-alive connection failed before any reply: the server had closed it."""

    def __init__(self, url: str) -> None:
        super().__init__(
            "the server closed a kept-alive connection as the request went out on it",
            url=url,
            transient=True,
            may_have_run=False,
        )


class Redactor:
    """Replaces the client's secrets in any text it shows (a server may quote them back)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def message(self, text: str, limit: int = MESSAGE_CHARS) -> str:
        """A server's error message, redacted before it is cut to ``limit`` characters: a
        hostile server's 20 MiB message is not an error's message."""
        text = self(text)
        if len(text) <= limit:
            return text
        return f"{text[:limit]}... (cut: {len(text):,} characters in all)"

    def snippet(self, body: bytes) -> str:
        """The start of a body, one line, redacted before it is cut: a secret across the cut
        would otherwise show its first half."""
        text = self(body.decode("utf-8", errors="replace"))
        return " ".join(text[: SNIPPET_CHARS * 4].split())[:SNIPPET_CHARS]


class Turn:
    """One request's turn on a connection, followed through the ``trace`` request extension
    (httpx documents it; httpcore sends it): whether it opened a new connection and whether any
    reply has begun (a redirect's included). With a transport that sends no trace events
    (aiohttp's, an in-process app's) nothing is known of the request's fate when it fails, so a
    failure is never taken as stale, and a connection error may have come after the request
    went out: neither is repeated unless ``retry_unsafe`` is set."""

    __slots__ = ("answered", "extensions", "opened", "traced")

    def __init__(self) -> None:
        self.traced = False
        self.opened = False
        self.answered = False
        self.extensions: dict[str, Any] = {"trace": self._trace}

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        self.traced = True
        if event == "connection.connect_tcp.started":
            self.opened = True
        elif event.endswith("receive_response_headers.complete"):
            self.answered = True

    @property
    def stale(self) -> bool:
        """It went out on a reused connection and nothing came back."""
        return self.traced and not self.opened and not self.answered


class AsyncTurn(Turn):
    """The same for an async transport, which awaits its trace callback."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.extensions = {"trace": self._atrace}

    async def _atrace(self, event: str, info: Mapping[str, Any]) -> None:
        self._trace(event, info)


class Translate:
    """A context in which what ``FAILURES`` lists leaves as its promptwire error. An
    ``EndpointError`` and anything the table does not list pass unchanged."""

    __slots__ = ("redact", "turn", "url")

    def __init__(self, url: str, redact: Redactor, turn: Turn | None = None) -> None:
        self.url = url
        self.redact = redact
        self.turn = turn

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, EndpointError):
            return
        failure = next((f for f in FAILURES if isinstance(exc, f.raised)), None)
        if failure is None:
            return
        if failure.stale_if_unanswered and self.turn is not None and self.turn.stale:
            raise StaleConnectionError(self.url) from None
        reason = self.redact(str(exc) or type(exc).__name__)  # async read errors are often blank
        message = failure.message.format(reason=reason, name=type(exc).__name__)
        # A connection error means nothing was sent only where the transport traces its
        # connections: httpx-aiohttp reports a server that hung up on a sent request as
        # ConnectTimeout (see ``Turn``).
        may_have_run = failure.may_have_run or (self.turn is not None and not self.turn.traced)
        raise failure.becomes(
            message, url=self.url, transient=failure.transient, may_have_run=may_have_run
        ) from None
