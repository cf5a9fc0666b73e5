"""Everything about a call to the endpoint that does no I/O, shared by the sync and async clients.

``Exchange`` holds what one endpoint's calls share (its URL, wire format, redaction, redirect
guard, retry policy); ``Call`` is one call: its request, its attempts, the request id its errors
name, its deadlines, and the reading of its reply. The clients only move bytes: they send the
requests a ``Call`` builds and feed it what comes back.

Bodies are read raw and decoded by ``BodyDecoder`` (httpx would inflate without a cap), at most
``max_reply_bytes`` for a whole body or one event. Timeouts are ``Deadline``s: a whole reply is due
within ``timeout`` of its request, and in a stream each event of the protocol within ``timeout`` of
the one before (pings, comments and events of other types do not hold a stalled stream open). A
router sets ``CALL_ENDS`` while it tries a member (``ending_by``): the attempt is then due when
the routed call is, however many members it has tried before.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import httpx

from promptwire.client._transport.config import ClientConfig, parse_endpoint_url
from promptwire.client._transport.errors import TYPE_CHARS, Redactor, Translate, Turn
from promptwire.client._transport.pools import ClientOptions
from promptwire.client._transport.redirects import RedirectGuard
from promptwire.client._transport.reply_body import BodyDecoder
from promptwire.client._transport.retry import RetryPolicy, parse_retry_after
from promptwire.client.sse import Event, SSEDecoder
from promptwire.client.wire import MalformedReply, RemoteStreamError, StreamEvent, parse_json
from promptwire.errors import (
    EndpointError,
    EndpointTimeoutError,
    HTTPStatusError,
    InvalidInputError,
    ProtocolError,
    StreamError,
    status_error_class,
)
from promptwire.protocol import PromptResponse, StreamDelta, StreamDone, StreamToolCall
from promptwire.protocol._unicode_text import lone_surrogate

REQUEST_ID_HEADER = "X-Request-ID"

CALL_ENDS: ContextVar[float | None] = ContextVar("promptwire_call_ends", default=None)
"""When (``time.monotonic()``) the call under way must be over, where a router set it."""


@contextlib.contextmanager
def ending_by(ends: float) -> Iterator[None]:
    """Within the block, every attempt (its connection, its reply, a stream's opening and first
    event, a ``/health`` look) is due by ``ends`` at the latest."""
    token = CALL_ENDS.set(ends)
    try:
        yield
    finally:
        CALL_ENDS.reset(token)


class Exchange:
    """What every call to one endpoint shares."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.wire = config.wire
        self.url = parse_endpoint_url(config.endpoint_url)  # parsed once, not on every request
        self.redact = Redactor(config.secrets())
        self.guard = RedirectGuard(self.url, config.credential_headers(), config.endpoint_url)
        self.retry = RetryPolicy(
            config.max_retries,
            config.retry_unsafe,
            config.max_connections,
            longest_wait=config.timeout,
        )
        self.health_url = self.url.copy_with(path=self.url.path.rstrip("/") + "/health")
        self.client_options = ClientOptions(config)
        """How promptwire's own httpx clients are made (one SSL context for all of them)."""

    def given_client_options(self) -> dict[str, Any]:
        """What each request through a user's client carries besides what that client adds:
        promptwire's headers (they win over the client's) and timeouts."""
        return {"headers": self.config.request_headers(), "timeout": self.config.httpx_timeout()}

    def call(self, payload: Mapping[str, Any], *, stream: bool) -> Call:
        url, body = self.wire.request(self.url, payload, stream=stream)
        return Call(self, "POST", url, body, stream=stream)

    def health_call(self, *, tries: bool = False) -> Call:
        """``GET <endpoint>/health``, tried once, or with a call's retries (``tries``)."""
        return Call(self, "GET", self.health_url, None, tries=tries)

    def translating(self, turn: Turn | None = None) -> Translate:
        """A context in which transport failures become promptwire's errors."""
        return Translate(self.config.endpoint_url, self.redact, turn)


class Deadline:
    """When the step under way must be done by; the async client also bounds its awaits by it."""

    __slots__ = ("_at", "_seconds", "_url")

    def __init__(self, seconds: float, url: str, ends: float | None = None) -> None:
        self._seconds = seconds
        self._url = url
        self._at = time.monotonic() + seconds
        if ends is not None and ends < self._at:  # a router's call ends first (not on reset)
            self._at = ends

    def reset(self) -> None:
        self._at = time.monotonic() + self._seconds

    def remaining(self) -> float:
        return self._at - time.monotonic()

    def check(self) -> None:
        if time.monotonic() > self._at:
            raise self.expired()

    def expired(self) -> EndpointTimeoutError:
        return EndpointTimeoutError(
            f"no complete reply within {self._seconds:g}s", url=self._url, transient=True
        )


class Call:
    """One call: its request (built anew for each attempt), its retries, and its reply."""

    def __init__(
        self,
        exchange: Exchange,
        method: str,
        url: httpx.URL,
        body: Mapping[str, Any] | None,
        *,
        tries: bool = True,
        stream: bool = False,
    ) -> None:
        self._exchange = exchange
        self._method = method
        self._url = url
        self._body = body
        self._stream = stream
        self._retries = exchange.retry.start() if tries else None
        self.request_id: str | None = None
        """The id of the last request sent: the one an error is about."""

    # -- requests ------------------------------------------------------------------------------

    def request(
        self, client: httpx.Client | httpx.AsyncClient, turn: Turn, options: Mapping[str, Any]
    ) -> httpx.Request:
        """The next attempt's request; ``options`` are ``given_client_options`` for a user's
        client (httpx merges in what that client adds), empty for promptwire's own, whose
        headers are all a request needs: merging its URL, headers, query and cookies anew for
        every request would only copy them (``send`` adds its timeout)."""
        extensions = turn.extensions
        if (ends := CALL_ENDS.get()) is not None:
            extensions = {**extensions, "timeout": self._timeouts_until(ends)}
        try:
            if options:
                request = client.build_request(
                    self._method, self._url, json=self._body, extensions=extensions, **options
                )
            else:
                request = httpx.Request(
                    self._method,
                    self._url,
                    json=self._body,
                    headers=client.headers,
                    extensions=extensions,
                )
        except UnicodeEncodeError as exc:  # the JSON body has no UTF-8 form
            raise InvalidInputError(_not_unicode(self._body, exc)) from None
        return self.checked(request, options)

    def _timeouts_until(self, ends: float) -> dict[str, float]:
        """httpx's timeouts of one wait, cut to the time left of a router's call: what bounds a
        blocking (sync) wait. A stream's reads keep the whole ``timeout``: they wait for every
        event, the first one included (the async client's deadline still ends that at
        ``ends``)."""
        config = self._exchange.config
        left = max(ends - time.monotonic(), 0.001)
        cut = min(config.timeout, left)
        return {
            "connect": min(config.connect_timeout, left),
            "read": config.timeout if self._stream else cut,
            "write": cut,
            "pool": cut,
        }

    def checked(self, request: httpx.Request, options: Mapping[str, Any]) -> httpx.Request:
        """``request`` (the first, or one httpx built to follow a redirect), named and passed
        through the redirect guard. Each request gets an ``X-Request-ID`` (a redirect keeps its
        request's), which the server logs and errors quote. The ``Cookie`` header a user's
        client adds from its jar is dropped."""
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id is None:
            # A UUID4: some servers refuse any other form (llama-cpp-python's answers 400).
            request_id = request.headers[REQUEST_ID_HEADER] = str(uuid.uuid4())
        self.request_id = request_id
        if options:  # a user's client
            request.headers.pop("Cookie", None)
        self._exchange.guard.check(request)
        return request

    def deadline(self) -> Deadline:
        config = self._exchange.config
        return Deadline(config.timeout, config.endpoint_url, CALL_ENDS.get())

    def wait_after(self, exc: EndpointError) -> float | None:
        """Seconds before the next attempt after ``exc``, or None: raise it."""
        return None if self._retries is None else self._retries.wait_after(exc)

    @contextlib.contextmanager
    def naming(self) -> Iterator[None]:
        """An error leaving the block names the last request the call sent."""
        try:
            yield
        except EndpointError as exc:
            if exc.request_id is None:
                exc.request_id = self.request_id
            raise

    def too_many_redirects(self) -> ProtocolError:
        return ProtocolError("too many redirects", url=self._exchange.config.endpoint_url)

    # -- replies -------------------------------------------------------------------------------

    def body_decoder(self, response: httpx.Response) -> BodyDecoder:
        """Decodes a whole body, at most ``max_reply_bytes`` of it."""
        encoding = response.headers.get("content-encoding", "")
        return BodyDecoder(encoding, self._exchange.config.max_reply_bytes)

    def reply(self, response: httpx.Response, body: bytes) -> PromptResponse:
        """A whole reply, or the error its status says."""
        if not response.is_success:
            raise self.status_error(response, body)
        exchange = self._exchange
        try:
            data = parse_json(body)
        except ValueError:
            raise ProtocolError(
                f"the reply is not JSON: {exchange.redact.snippet(body)!r}",
                url=exchange.config.endpoint_url,
            ) from None
        try:
            return exchange.wire.reply(data)
        except MalformedReply as exc:
            raise ProtocolError(
                exchange.redact(str(exc)), url=exchange.config.endpoint_url
            ) from None

    def status_error(self, response: httpx.Response, body: bytes) -> HTTPStatusError:
        """The error a non-2xx answer stands for, with the error body's type and message."""
        redact = self._exchange.redact
        error_type, message = None, f"unexpected reply: {redact.snippet(body)!r}"
        try:
            found = self._exchange.wire.error(parse_json(body))
        except ValueError:
            found = None
        if found is not None:
            error_type = None if found[0] is None else redact.message(found[0], TYPE_CHARS)
            message = redact.message(found[1])
        status = response.status_code
        if 300 <= status < 400:
            location = redact.message(response.headers.get("location", "no location"))
            message = f"redirect not followed ({location})"
        error = status_error_class(status)(
            message,
            url=self._exchange.config.endpoint_url,
            status_code=status,
            error_type=error_type,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
        error.body = redact(body.decode("utf-8", errors="replace"))
        return error

    def events(self, response: httpx.Response) -> StreamDecoder:
        return StreamDecoder(self._exchange, response)

    def health(self, response: httpx.Response, body: bytes) -> httpx.Response:
        """The ``/health`` answer, read (bounded) into a response of its own."""
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=response.request
        )

    def protocol_health(self, response: httpx.Response, body: bytes) -> httpx.Response:
        """The ``/health`` answer that says which protocol the server speaks: a success, or a
        404/405 (a server with no ``/health``: older than 1.1); any other status is the error it
        stands for (a server loading, overloaded or refusing the key is not an older one)."""
        if not response.is_success and response.status_code not in (404, 405):
            raise self.status_error(response, body)
        return self.health(response, body)


class StreamDecoder:
    """A stream's raw bytes in, the wire format's events out: body decoding, server-sent events
    and the wire format's reading, bounded, with errors already promptwire's."""

    def __init__(self, exchange: Exchange, response: httpx.Response) -> None:
        config = exchange.config
        self._exchange = exchange
        self._body = BodyDecoder(response.headers.get("content-encoding", ""), None)
        self._sse = SSEDecoder(config.max_reply_bytes)
        self._reader = exchange.wire.events()

    def feed(self, raw: bytes) -> Iterator[StreamEvent]:
        # Lazy: the events after the end event of a chunk are never read.
        for piece in self._body.feed(raw):
            for found in self._sse.feed(piece):
                yield from self._read(found)

    def end(self) -> Iterator[StreamEvent]:
        """The stream's last events, once its bytes have ended; a stream that ends before its
        end event (and whose format does not end without one) is a ``ProtocolError``."""
        for piece in self._body.flush():
            for found in self._sse.feed(piece):
                yield from self._read(found)
        self._sse.close()
        if (last := self._reader.end()) is not None:
            yield last
            return
        raise ProtocolError(
            f"the stream ended before its {self._reader.end_event}",
            url=self._exchange.config.endpoint_url,
        )

    def _read(self, sse: Event) -> Sequence[StreamEvent]:
        exchange = self._exchange
        try:
            return self._reader.read(sse)
        except MalformedReply as exc:
            raise ProtocolError(
                f"{exchange.redact(str(exc))}: {exchange.redact.snippet(sse.data.encode())!r}",
                url=exchange.config.endpoint_url,
            ) from None
        except RemoteStreamError as exc:
            raise StreamError(
                exchange.redact.message(exc.message),
                url=exchange.config.endpoint_url,
                error_type=exchange.redact.message(exc.error_type, TYPE_CHARS),
            ) from None


def is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


def whole_reply_as_stream(reply: PromptResponse) -> list[StreamEvent]:
    """A whole reply (from a server that does not stream) as the events a stream would carry."""
    events: list[StreamEvent] = []
    if reply.prompt:
        events.append(StreamDelta(text=reply.prompt))
    for index, call in enumerate(reply.tool_calls or ()):
        function = call.function
        events.append(
            StreamToolCall(
                index=index, id=call.id, name=function.name, arguments=function.arguments
            )
        )
    events.append(
        StreamDone(finish_reason=reply.finish_reason, usage=reply.usage, model=reply.model)
    )
    return events


def _not_unicode(body: Any, exc: UnicodeEncodeError) -> str:
    """Where in ``body`` the text that is not valid Unicode is, said without the text itself
    (a prompt may hold what should not reach a log)."""
    found = lone_surrogate(body)
    said = (
        found.described()
        if found
        else (f"the body holds U+{ord(exc.object[exc.start]):04X}, a lone surrogate")
    )
    return (
        f"the request cannot be sent: {said}, which is "
        "not valid Unicode text (it has no UTF-8 form); nothing was sent. Decode the text with "
        "errors='replace', or drop the surrogate."
    )
