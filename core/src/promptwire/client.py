"""The HTTP client of the prompt endpoint protocol: pooled, timed, retried where safe, typed errors.

One ``EndpointClient`` holds one sync httpx pool and, for async calls, small httpx pools sharing
the load (each made on first use, all with one SSL context). Async connections belong to the event
loop that opened them: each running loop gets pools of its own, closed when that loop shuts down,
so one client serves ``asyncio.run`` after ``asyncio.run`` and threads that each run a loop.
It follows Modal's 303 redirect for long requests, honours ``Retry-After``, and only repeats a
request when the server cannot have run it (connection never made, 429, 503) unless
``retry_unsafe`` is set. The protocol is stateless, so the pools keep no cookies (which also saves
httpx's cookie-jar work on every reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import re
import ssl
import threading
import time
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookiejar import Cookie, CookieJar
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from promptwire.errors import (
    ConfigurationError,
    EndpointConnectError,
    EndpointError,
    EndpointTimeoutError,
    ProtocolError,
    ReplyTooLargeError,
    StreamError,
    status_error_class,
)
from promptwire.protocol import PromptResponse, StreamDelta, StreamDone, StreamToolCall
from promptwire.reply_body import ACCEPT_ENCODING, BodyDecoder, ReplyTooLarge, UnsupportedEncoding
from promptwire.sse import Event, EventTooLarge, SSEDecoder
from promptwire.wire import (
    PROMPT_PROTOCOL,
    EventReader,
    MalformedReply,
    RemoteStreamError,
    StreamEvent,
    WireFormat,
    parse_json,
)

T = TypeVar("T")

MAX_RETRY_AFTER = 60.0
SNIPPET_CHARS = 200
#: The default bound on a reply's decoded size (a whole reply, or one event of a stream).
MAX_REPLY_BYTES = 32 << 20
USER_AGENT = "promptwire"
#: httpcore's connection pool rescans all its connections several times per request (work
#: quadratic in its size; encode/httpcore#1035): at 64 requests in flight that costs more CPU
#: than the requests. Concurrent async requests are spread over pools of at most this many.
CONNECTIONS_PER_POOL = 8

# Pools are made on first use, which can come from many threads at once (a batch): without a
# lock each thread made its own httpx client, and all but one leaked.
_MAKING = threading.Lock()
REQUEST_ID_HEADER = "X-Request-ID"
#: The id of the last request this thread or task sent (set by the request hook, which runs in
#: the caller's context): the request an error raised there is about.
_SENT_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "promptwire_sent_request_id", default=None
)


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: SecretStr | None = None
    secret_headers: Mapping[str, SecretStr] = field(default_factory=dict)
    """Headers whose values are secrets (Modal proxy auth); never shown in reprs or errors."""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    retry_unsafe: bool = False
    max_connections: int = 100
    max_reply_bytes: int = MAX_REPLY_BYTES
    """The most bytes of a whole reply, or of one event of a stream, once decoded."""
    wire: WireFormat = PROMPT_PROTOCOL
    """What requests and replies look like (the prompt protocol unless a backend says)."""


class EndpointClient:
    """Sends requests to one endpoint URL, in the wire format of its config."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.wire = config.wire
        self._url = parse_endpoint_url(config.url)  # parsed once, not on every request
        self._origin = _origin(self._url)
        self._credential_headers = ["Authorization", *config.secret_headers]
        for name, secret in [("api_key", config.api_key), *config.secret_headers.items()]:
            if secret is not None:
                check_header_secret(name, secret.get_secret_value())
        self._sync: httpx.Client | None = None
        self._async = _PoolsPerLoop(
            lambda: _AsyncPools(self._async_client_options, config.max_connections)
        )
        self._ssl: ssl.SSLContext | None = None
        self._secrets = [
            s.get_secret_value()
            for s in [config.api_key, *config.secret_headers.values()]
            if s is not None and s.get_secret_value()
        ]

    def __repr__(self) -> str:
        return f"EndpointClient(url={self.config.url!r})"

    # -- pools ---------------------------------------------------------------------------------

    def _client_options(self, max_connections: int, hook: Callable[..., Any]) -> dict[str, Any]:
        cfg = self.config
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            **cfg.headers,
        }
        headers.update({k: v.get_secret_value() for k, v in cfg.secret_headers.items()})
        if cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        timeout = httpx.Timeout(cfg.timeout, connect=cfg.connect_timeout)
        with _MAKING:
            if self._ssl is None:  # made once and shared by every pool: loading the CAs is slow
                self._ssl = httpx.create_ssl_context()
        return {
            "headers": headers,
            "timeout": timeout,
            "limits": limits,
            "follow_redirects": True,
            "verify": self._ssl,
            "event_hooks": {"request": [hook]},
        }

    def _async_client_options(self, max_connections: int) -> dict[str, Any]:
        return self._client_options(max_connections, self._aguard_redirect)

    # Every request of a redirect chain passes here before it is sent (httpx's request hook).
    # httpx itself strips only Authorization when a redirect leaves the endpoint's origin.
    # Each request gets an X-Request-ID (a redirect keeps its request's), which the server logs
    # and returns, and errors name.

    def _guard_redirect(self, request: httpx.Request) -> None:
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id is None:
            request_id = request.headers[REQUEST_ID_HEADER] = os.urandom(12).hex()
        _SENT_REQUEST_ID.set(request_id)
        if _origin(request.url) == self._origin:
            return
        if request.method not in ("GET", "HEAD"):  # a 307/308 would send the prompt there too
            raise ProtocolError(
                f"refused a redirect to another origin ({_origin_text(request.url)}) that would "
                "send the request body there",
                url=self.config.url,
            )
        for name in self._credential_headers:  # credentials never cross origins (RFC 9110)
            request.headers.pop(name, None)

    async def _aguard_redirect(self, request: httpx.Request) -> None:
        self._guard_redirect(request)

    @property
    def sync_client(self) -> httpx.Client:
        if self._sync is None:
            options = self._client_options(self.config.max_connections, self._guard_redirect)
            with _MAKING:
                if self._sync is None:
                    self._sync = _StatelessClient(**options)
        return self._sync

    @property
    def async_client(self) -> httpx.AsyncClient:
        """The running loop's first async pool (the one its sequential calls use)."""
        return self._async.current().client(0)

    def close(self) -> None:
        """Close the sync pool (async pools belong to their loops; see ``aclose``)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        """Close the running loop's async pools (other loops' pools close with their loops)."""
        await self._async.aclose_current()

    # -- whole replies -------------------------------------------------------------------------

    def complete(self, payload: Mapping[str, Any]) -> PromptResponse:
        url, body = self.wire.request(self._url, payload, stream=False)
        with _naming_the_request():
            return self._with_retries(lambda: self._complete_once(url, body))

    async def acomplete(self, payload: Mapping[str, Any]) -> PromptResponse:
        url, body = self.wire.request(self._url, payload, stream=False)
        with _naming_the_request():
            return await self._awith_retries(lambda: self._acomplete_once(url, body))

    def _complete_once(self, url: httpx.URL, body: Mapping[str, Any]) -> PromptResponse:
        deadline = time.monotonic() + self.config.timeout
        turn = _Turn()
        with self._translate_errors(turn):
            request = self.sync_client.build_request(
                "POST", url, json=body, extensions=turn.extensions
            )
            response = self.sync_client.send(request, stream=True)
            try:
                content = self._read_within(response, deadline)
            finally:
                response.close()
            self._raise_for_status(response, content)
        return self._parse_reply(content)

    async def _acomplete_once(self, url: httpx.URL, body: Mapping[str, Any]) -> PromptResponse:
        try:
            async with asyncio.timeout(self.config.timeout):
                turn = _AsyncTurn()
                with self._translate_errors(turn), self._async.current().lease() as client:
                    request = client.build_request(
                        "POST", url, json=body, extensions=turn.extensions
                    )
                    response = await client.send(request, stream=True)
                    try:
                        content = await self._aread_all(response)
                    finally:
                        await response.aclose()
                    self._raise_for_status(response, content)
        except TimeoutError as exc:
            raise self._timeout() from exc
        return self._parse_reply(content)

    # -- streams -------------------------------------------------------------------------------

    def stream(self, payload: Mapping[str, Any]) -> Iterator[StreamEvent]:
        """Yield ``StreamDelta``s (and, from a reasoning model, ``ReasoningDelta``s; v1.2:
        ``StreamToolCall``s), then one ``StreamDone``. A server that does not stream is read as
        one whole reply."""
        url, body = self.wire.request(self._url, payload, stream=True)
        with _naming_the_request():
            response = self._open_stream(url, body)
        try:
            with _naming_the_request(response):
                with self._translate_errors():
                    if not _is_event_stream(response):
                        whole = self._read_within(response, time.monotonic() + self.config.timeout)
                        yield from _whole_reply_as_stream(self._parse_reply(whole))
                        return
                    reader = self.wire.events()
                    for event in self._events_within(response, reader):
                        yield event
                        if isinstance(event, StreamDone):
                            return
                    if (last := reader.end()) is not None:
                        yield last
                        return
                raise ProtocolError(
                    f"the stream ended before its {reader.end_event}", url=self.config.url
                )
        finally:
            response.close()

    async def astream(self, payload: Mapping[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        with self._async.current().lease() as client:  # held until the stream is closed
            async with contextlib.aclosing(self._astream(client, payload)) as events:
                async for event in events:
                    yield event

    async def _astream(
        self, client: httpx.AsyncClient, payload: Mapping[str, Any]
    ) -> AsyncGenerator[StreamEvent, None]:
        url, body = self.wire.request(self._url, payload, stream=True)
        with _naming_the_request():
            response = await self._aopen_stream(client, url, body)
        try:
            with _naming_the_request(response):
                with self._translate_errors():
                    if not _is_event_stream(response):
                        reply = self._parse_reply(await self._aread(response))
                        for whole in _whole_reply_as_stream(reply):
                            yield whole
                        return
                    reader = self.wire.events()
                    events = self._aevents(response, reader)
                    async with contextlib.aclosing(events):
                        while True:
                            # The timeout runs from one event of the protocol to the next: pings,
                            # comments and events of other types do not hold a stalled stream open.
                            try:
                                async with asyncio.timeout(self.config.timeout):
                                    event = await anext(events)
                            except StopAsyncIteration:
                                break
                            except TimeoutError as exc:
                                raise self._timeout() from exc
                            yield event
                            if isinstance(event, StreamDone):
                                return
                    if (last := reader.end()) is not None:
                        yield last
                        return
                raise ProtocolError(
                    f"the stream ended before its {reader.end_event}", url=self.config.url
                )
        finally:
            await response.aclose()

    def _open_stream(self, url: httpx.URL, body: Mapping[str, Any]) -> httpx.Response:
        return self._with_retries(lambda: self._open_stream_once(url, body))

    def _open_stream_once(self, url: httpx.URL, body: Mapping[str, Any]) -> httpx.Response:
        turn = _Turn()
        with self._translate_errors(turn):
            request = self.sync_client.build_request(
                "POST", url, json=body, extensions=turn.extensions
            )
            response = self.sync_client.send(request, stream=True)
            if response.is_success:
                return response
            try:
                error_body = self._read_within(response, time.monotonic() + self.config.timeout)
                self._raise_for_status(response, error_body)
            finally:
                response.close()
        raise AssertionError("unreachable")  # pragma: no cover (_raise_for_status raised)

    async def _aopen_stream(
        self, client: httpx.AsyncClient, url: httpx.URL, body: Mapping[str, Any]
    ) -> httpx.Response:
        return await self._awith_retries(lambda: self._aopen_stream_once(client, url, body))

    async def _aopen_stream_once(
        self, client: httpx.AsyncClient, url: httpx.URL, body: Mapping[str, Any]
    ) -> httpx.Response:
        turn = _AsyncTurn()
        with self._translate_errors(turn):
            request = client.build_request("POST", url, json=body, extensions=turn.extensions)
            try:
                async with asyncio.timeout(self.config.timeout):
                    response = await client.send(request, stream=True)
            except TimeoutError as exc:
                raise self._timeout() from exc
            if response.is_success:
                return response
            try:
                self._raise_for_status(response, await self._aread(response))
            finally:
                await response.aclose()
        raise AssertionError("unreachable")  # pragma: no cover (_raise_for_status raised)

    # -- reading, bounded ----------------------------------------------------------------------
    # Bodies are read raw and decoded by ``BodyDecoder`` (httpx would inflate without a cap), at
    # most ``max_reply_bytes`` for a whole body or one event. The sync path has no
    # asyncio.timeout: httpx's read timeout restarts with every byte, so a slow drip or a stream
    # of keep-alive pings would never time out. It checks the clock itself.

    def _decoder(self, response: httpx.Response, *, whole: bool) -> BodyDecoder:
        limit = self.config.max_reply_bytes if whole else None
        return BodyDecoder(response.headers.get("content-encoding", ""), limit)

    def _read_within(self, response: httpx.Response, deadline: float) -> bytes:
        decoder = self._decoder(response, whole=True)
        body = bytearray()
        for raw in response.iter_raw():
            for piece in decoder.feed(raw):
                body += piece
            if time.monotonic() > deadline:
                raise self._timeout()
        for piece in decoder.flush():
            body += piece
        return bytes(body)

    async def _aread_all(self, response: httpx.Response) -> bytes:
        decoder = self._decoder(response, whole=True)
        body = bytearray()
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw):
                body += piece
        for piece in decoder.flush():
            body += piece
        return bytes(body)

    async def _aread(self, response: httpx.Response) -> bytes:
        try:
            async with asyncio.timeout(self.config.timeout):
                return await self._aread_all(response)
        except TimeoutError as exc:
            raise self._timeout() from exc

    def _events_within(
        self, response: httpx.Response, reader: EventReader
    ) -> Iterator[StreamEvent]:
        """The wire format's events, each due within ``timeout`` of the one before (as in
        ``astream``); pings, comments and events carrying nothing do not count."""
        decoder = self._decoder(response, whole=False)
        sse = SSEDecoder(self.config.max_reply_bytes)
        deadline = time.monotonic() + self.config.timeout
        for raw in response.iter_raw():
            for piece in decoder.feed(raw):
                for found in sse.feed(piece):
                    for event in self._read_event(reader, found):
                        yield event
                        deadline = time.monotonic() + self.config.timeout
            if time.monotonic() > deadline:
                raise self._timeout()
        for piece in decoder.flush():
            for found in sse.feed(piece):
                yield from self._read_event(reader, found)
        sse.close()

    async def _aevents(
        self, response: httpx.Response, reader: EventReader
    ) -> AsyncGenerator[StreamEvent, None]:
        decoder = self._decoder(response, whole=False)
        sse = SSEDecoder(self.config.max_reply_bytes)
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw):
                for found in sse.feed(piece):
                    for event in self._read_event(reader, found):
                        yield event
        for piece in decoder.flush():
            for found in sse.feed(piece):
                for event in self._read_event(reader, found):
                    yield event
        sse.close()

    # -- parsing -------------------------------------------------------------------------------

    def _parse_reply(self, body: bytes) -> PromptResponse:
        try:
            data = parse_json(body)
        except ValueError:
            raise ProtocolError(
                f"the reply is not JSON: {self._snippet(body)!r}", url=self.config.url
            ) from None
        try:
            return self.wire.reply(data)
        except MalformedReply as exc:
            raise ProtocolError(self._redact(str(exc)), url=self.config.url) from None

    def _read_event(self, reader: EventReader, sse: Event) -> Sequence[StreamEvent]:
        try:
            return reader.read(sse)
        except MalformedReply as exc:
            raise ProtocolError(
                f"{self._redact(str(exc))}: {self._snippet(sse.data.encode())!r}",
                url=self.config.url,
            ) from None
        except RemoteStreamError as exc:
            raise StreamError(
                self._redact(exc.message),
                url=self.config.url,
                error_type=self._redact(exc.error_type),
            ) from None

    def _raise_for_status(self, response: httpx.Response, body: bytes) -> None:
        if response.is_success:
            return
        error_type, message = None, f"unexpected reply: {self._snippet(body)!r}"
        try:
            found = self.wire.error(parse_json(body))
        except ValueError:
            found = None
        if found is not None:
            error_type = None if found[0] is None else self._redact(found[0])
            message = self._redact(found[1])
        status = response.status_code
        if 300 <= status < 400:
            message = f"redirect not followed ({response.headers.get('location', 'no location')})"
        raise status_error_class(status)(
            message,
            url=self.config.url,
            status_code=status,
            error_type=error_type,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )

    def _snippet(self, body: bytes) -> str:
        # Redact before cutting: a secret across the cut would otherwise show its first half.
        text = self._redact(body.decode("utf-8", errors="replace"))
        return " ".join(text[: SNIPPET_CHARS * 4].split())[:SNIPPET_CHARS]

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "**********")
        return text

    def _timeout(self) -> EndpointTimeoutError:
        return EndpointTimeoutError(
            f"no complete reply within {self.config.timeout:g}s",
            url=self.config.url,
            transient=True,
        )

    # -- errors and retries --------------------------------------------------------------------

    def _translate_errors(self, turn: _Turn | _AsyncTurn | None = None) -> _TranslateErrors:
        return _TranslateErrors(self.config.url, self._redact, turn)

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, EndpointError) or not exc.transient:
            return False
        return self.config.retry_unsafe or not exc.may_have_run

    # The first attempt runs outside tenacity: setting up its retry loop costs more CPU than a
    # local HTTP request. Only a failure worth repeating enters the loop, as its first attempt,
    # so waits, Retry-After and the attempt count are exactly tenacity's.

    def _with_retries(self, attempt_once: Callable[[], T]) -> T:
        try:
            return self._past_stale_connections(attempt_once)
        except EndpointError as exc:
            if not self.config.max_retries or not self._should_retry(exc):
                raise
            first_failure: EndpointError | None = exc
        for attempt in Retrying(**self._retry_options()):
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return self._past_stale_connections(attempt_once)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _awith_retries(self, attempt_once: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self._apast_stale_connections(attempt_once)
        except EndpointError as exc:
            if not self.config.max_retries or not self._should_retry(exc):
                raise
            first_failure: EndpointError | None = exc
        async for attempt in AsyncRetrying(**self._retry_options()):
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._apast_stale_connections(attempt_once)
        raise AssertionError("unreachable")  # pragma: no cover

    # A kept-alive connection the server closed just as a request went out on it fails before
    # any reply: the server cannot have run that request. It is sent again at once, outside the
    # retry budget, as Go's net/http does; each failed connection leaves the pool, so this ends
    # after at most the pool's idle connections, on a new connection.

    def _past_stale_connections(self, attempt_once: Callable[[], T]) -> T:
        for _ in range(self.config.max_connections):
            try:
                return attempt_once()
            except StaleConnectionError:
                continue
        return attempt_once()

    async def _apast_stale_connections(self, attempt_once: Callable[[], Awaitable[T]]) -> T:
        for _ in range(self.config.max_connections):
            try:
                return await attempt_once()
            except StaleConnectionError:
                continue
        return await attempt_once()

    def _retry_options(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.config.max_retries + 1),
            "retry": retry_if_exception(self._should_retry),
            "wait": _wait_honouring_retry_after,
            "reraise": True,
        }


_backoff = wait_exponential_jitter(multiplier=0.5, max=8.0)


def _wait_honouring_retry_after(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return float(min(max(retry_after, 0.0), MAX_RETRY_AFTER))
    return float(_backoff(state))


_USERINFO = re.compile(r"//[^/?#]*@")
_HEADER_SECRET = re.compile(r"[\x21-\x7e]+")


def check_header_secret(name: str, value: str) -> None:
    """Refuse a secret that cannot travel in an HTTP header: empty, or with a space, a control
    character or a non-ASCII character (a token file read with its trailing newline). Naming the
    setting, never the value: httpx's own error would quote the whole header."""
    if not _HEADER_SECRET.fullmatch(value):
        raise ConfigurationError(
            f"{name} must be printable ASCII without spaces or control characters (is there a "
            "trailing newline?); its value is not shown"
        )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _origin_text(url: httpx.URL) -> str:
    return str(url.copy_with(path="/", query=None, fragment=None, username=None, password=None))


def parse_endpoint_url(url: str) -> httpx.URL:
    """The endpoint URL, checked once up front: http(s) with a host and no credentials in it
    (they would show in every error message, repr and serialized model), or a
    ``ConfigurationError``."""
    shown = _USERINFO.sub("//***@", url) if isinstance(url, str) else repr(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"endpoint URL {shown!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(
            f"endpoint URL {shown!r} must be an http:// or https:// URL with a host"
        )
    if parsed.userinfo:
        raise ConfigurationError(
            f"endpoint URL {shown!r} carries credentials; pass them as api_key (bearer) or "
            "modal_key/modal_secret instead"
        )
    return parsed


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class _AsyncPools:
    """Async httpx clients sharing one endpoint's connections, at most ``CONNECTIONS_PER_POOL``
    each (made on first use). A request takes the one with the most free connections, the first
    among equals, so sequential calls always reuse the first pool's connection and no request
    waits for a connection while another pool has one free."""

    def __init__(self, options: Callable[[int], dict[str, Any]], max_connections: int) -> None:
        full, rest = divmod(max(1, max_connections), CONNECTIONS_PER_POOL)
        self._sizes = [CONNECTIONS_PER_POOL] * full + ([rest] if rest else [])
        self._options = options
        self._clients: list[httpx.AsyncClient | None] = [None] * len(self._sizes)
        self._busy = [0] * len(self._sizes)

    def client(self, index: int) -> httpx.AsyncClient:
        client = self._clients[index]
        if client is None:
            options = self._options(self._sizes[index])
            client = self._clients[index] = _StatelessAsyncClient(**options)
        return client

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        free = [size - busy for size, busy in zip(self._sizes, self._busy, strict=True)]
        index = free.index(max(free))
        self._busy[index] += 1
        try:
            yield self.client(index)
        finally:
            self._busy[index] -= 1

    async def aclose(self) -> None:
        clients, self._clients = self._clients, [None] * len(self._sizes)
        for client in clients:
            if client is not None:
                await client.aclose()


class _PoolsPerLoop:
    """The ``_AsyncPools`` of each running event loop.

    An asyncio connection can only be used, and closed, by the loop that opened it, and one model
    object is used from many loops: ``asyncio.run`` after ``asyncio.run`` in a script or a test
    suite, a thread per loop in a web app, a notebook's loop beside them. Each loop gets its own
    pools, found by one identity check on the hot path. They are closed when their loop shuts
    down (``asyncio.run`` and ``loop.shutdown_asyncgens()`` close the async generators a loop
    started, and one of those holds them); the pools of a loop closed without shutting down are
    dropped at the next pools made (their sockets closed as the loop left them).
    """

    def __init__(self, make: Callable[[], _AsyncPools]) -> None:
        self._make = make
        self._by_loop: dict[asyncio.AbstractEventLoop, _LoopPools] = {}
        self._last: _LoopPools | None = None  # the last one used: the single-loop fast path
        # Several threads' loops may make pools at once; re-entrant because dropping a closed
        # loop's pools ends their closer, which forgets them.
        self._lock = threading.RLock()

    def current(self) -> _AsyncPools:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last.loop is loop:
            return last.pools
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is None:
                self._drop_closed_loops()
                entry = self._by_loop[loop] = _LoopPools(loop, self._make(), self._forget)
            self._last = entry
        return entry.pools

    async def aclose_current(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
        if entry is not None:
            await entry.pools.aclose()

    def _forget(self, entry: _LoopPools) -> None:
        with self._lock:
            if self._by_loop.get(entry.loop) is entry:
                del self._by_loop[entry.loop]
            if self._last is entry:
                self._last = None

    def _drop_closed_loops(self) -> None:
        for entry in [e for e in self._by_loop.values() if e.loop.is_closed()]:
            del self._by_loop[entry.loop]
            entry.abandon()
        if self._last is not None and self._last.loop.is_closed():
            self._last = None


class _LoopPools:
    """One loop's pools, and the async generator that closes them when the loop shuts down."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pools: _AsyncPools,
        forget: Callable[[_LoopPools], None],
    ) -> None:
        self.loop = loop
        self.pools = pools
        self._forget = forget
        # Started here, in the loop's thread, so the loop registers it (its first-iteration
        # hook) and closes it in ``shutdown_asyncgens``; it runs to its ``yield`` at once.
        self._closer = self._close_at_shutdown()
        with contextlib.suppress(StopIteration):
            self._closer.__anext__().send(None)

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._forget(self)
            if not self.loop.is_closed():
                await self.pools.aclose()

    def abandon(self) -> None:
        """The loop closed without shutting down: end the closer without awaiting anything (its
        loop cannot run it), so it is not handed to that closed loop when collected."""
        with contextlib.suppress(StopIteration, RuntimeError):
            self._closer.aclose().send(None)


class _RefusingJar(CookieJar):
    """A cookie jar that stores nothing, whoever asks."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None


class _NoCookies(httpx.Cookies):
    """Cookies that are never stored: the protocol is stateless, and one caller's cookies must
    not ride along on another's requests. Replies are not even looked at for them."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _NoCookies(_RefusingJar())  # shared by every client: it is always empty


class _Stateless:
    """Mixed into the httpx clients to take their cookie jar away. Besides statelessness this
    saves about half of httpx's own CPU per request, which goes to urllib's cookie machinery
    (benchmark 3)."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise AttributeError("promptwire's endpoint clients keep no cookies")


class _StatelessClient(_Stateless, httpx.Client):
    pass


class _StatelessAsyncClient(_Stateless, httpx.AsyncClient):
    pass


def _is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


def _whole_reply_as_stream(reply: PromptResponse) -> Iterator[StreamEvent]:
    if reply.prompt:
        yield StreamDelta(text=reply.prompt)
    for index, call in enumerate(reply.tool_calls or ()):
        function = call.function
        yield StreamToolCall(
            index=index, id=call.id, name=function.name, arguments=function.arguments
        )
    yield StreamDone(finish_reason=reply.finish_reason, usage=reply.usage, model=reply.model)


@contextlib.contextmanager
def _naming_the_request(response: httpx.Response | None = None) -> Iterator[None]:
    """An error leaving the block names the request it is about: ``response``'s, else the last
    one sent in the block."""
    if response is None:
        _SENT_REQUEST_ID.set(None)
    try:
        yield
    except EndpointError as exc:
        if exc.request_id is None:
            if response is not None:
                exc.request_id = response.request.headers.get(REQUEST_ID_HEADER)
            else:
                exc.request_id = _SENT_REQUEST_ID.get()
        raise


class StaleConnectionError(EndpointConnectError):
    """A reused kept-alive connection failed before any reply: the server had closed it."""

    def __init__(self, url: str) -> None:
        super().__init__(
            "the server closed a kept-alive connection as the request went out on it",
            url=url,
            transient=True,
            may_have_run=False,
        )


class _Turn:
    """One request's turn on a connection, followed through httpcore's ``trace`` extension:
    whether it opened a new connection and whether any reply has begun (a redirect's included).
    """

    __slots__ = ("answered", "extensions", "opened")

    def __init__(self) -> None:
        self.opened = False
        self.answered = False
        self.extensions: dict[str, Any] = {"trace": self._trace}

    def _see(self, event: str) -> None:
        if event == "connection.connect_tcp.started":
            self.opened = True
        elif event.endswith("receive_response_headers.complete"):
            self.answered = True

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        self._see(event)

    @property
    def stale(self) -> bool:
        """It went out on a reused connection and nothing came back."""
        return not self.opened and not self.answered


class _AsyncTurn(_Turn):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.extensions = {"trace": self._atrace}

    async def _atrace(self, event: str, info: Mapping[str, Any]) -> None:
        self._see(event)


class _TranslateErrors:
    """Turns httpx's transport errors, and a reply the client will not decode, into promptwire's
    errors, marking which are safe to retry. Messages are redacted and the original exception is
    not chained: its text and repr may quote a header (a token)."""

    def __init__(self, url: str, redact: Callable[[str], str], turn: _Turn | None = None) -> None:
        self.url = url
        self.redact = redact
        self.turn = turn

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or isinstance(exc, EndpointError):
            return
        url = self.url
        new: EndpointError
        if isinstance(exc, ReplyTooLarge | EventTooLarge):
            raise ReplyTooLargeError(str(exc), url=url) from None
        if isinstance(exc, UnsupportedEncoding | zlib.error):
            raise ProtocolError(f"the reply cannot be decoded: {exc}", url=url) from None
        if not isinstance(exc, httpx.HTTPError):
            return
        reason = self.redact(str(exc) or type(exc).__name__)  # async read errors are often blank
        if isinstance(exc, httpx.ConnectTimeout):
            new = EndpointTimeoutError(
                "timed out connecting", url=url, transient=True, may_have_run=False
            )
        elif isinstance(exc, httpx.ConnectError):
            new = EndpointConnectError(
                f"cannot connect: {reason}", url=url, transient=True, may_have_run=False
            )
        elif isinstance(exc, httpx.TimeoutException):
            new = EndpointTimeoutError(
                f"timed out waiting for the reply ({type(exc).__name__})", url=url, transient=True
            )
        elif isinstance(exc, httpx.TooManyRedirects):
            new = ProtocolError("too many redirects", url=url)
        elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            if self.turn is not None and self.turn.stale:
                raise StaleConnectionError(url) from None
            new = EndpointConnectError(
                f"the connection broke mid-reply: {reason}", url=url, transient=True
            )
        else:
            new = EndpointError(f"{type(exc).__name__}: {reason}", url=url)
        raise new from None


__all__ = ["ClientConfig", "EndpointClient", "StaleConnectionError", "StreamEvent", "parse_json"]
