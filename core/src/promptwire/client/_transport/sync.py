"""The sync I/O shell: ``promptwire.client._transport.aio`` without ``await``.

Below ``close`` the two modules say the same, method for method, once ``await`` and the async
names are taken out (tests/unit/test_client_shells.py checks). What they do not share is how they
hold connections (here: one pool, which threads share) and how a deadline bounds a wait: a
blocking call cannot be cancelled, so httpx's own timeouts bound each wait and the clock is
checked after it (httpx's read timeout restarts with every byte: a slow drip or a stream of
keep-alive pings would never time out by it alone).
"""

# The methods below mirror the async shell's, whose ``async with`` cannot merge with a ``with``
# and whose loops cannot ``yield from``.
# ruff: noqa: SIM117, UP028

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from contextlib import AbstractContextManager, closing, nullcontext
from time import sleep
from types import TracebackType
from typing import Any, TypeVar

import httpx

from promptwire.client._transport.errors import Turn
from promptwire.client._transport.exchange import (
    Call,
    Deadline,
    Exchange,
    is_event_stream,
    whole_reply_as_stream,
)
from promptwire.client._transport.forks import ForkSafeLock, generation
from promptwire.client._transport.pools import make_client
from promptwire.client.wire import StreamEvent
from promptwire.errors import EndpointError
from promptwire.protocol import PromptResponse, StreamDone

T = TypeVar("T")

# The client is made on first use, which can come from a batch's threads at once.
_MAKING = ForkSafeLock()


class _Within:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_WITHIN = _Within()


def within(deadline: Deadline) -> _Within:
    """Nothing: a blocking call cannot be cancelled. httpx's timeouts bound each wait, and the
    reading loops check ``deadline`` after every piece (as the async shell's also do)."""
    return _WITHIN


class SyncEndpointClient:
    """Calls one endpoint from sync code (any thread), through promptwire's pool or the user's
    client."""

    def __init__(self, exchange: Exchange, http_client: httpx.Client | None = None) -> None:
        self._exchange = exchange
        self._given = http_client
        self._options = {} if http_client is None else exchange.given_client_options()
        self._own: httpx.Client | None = None
        self._made_in = -1  # the fork generation ``_own`` was made in

    @property
    def http_client(self) -> httpx.Client:
        """The httpx client every call uses (promptwire's is made on first use, and again in a
        forked child: the parent's holds the parent's connections)."""
        if self._given is not None:
            return self._given
        own = self._own
        if own is None or self._made_in != generation():
            with _MAKING:
                if self._own is None or self._made_in != generation():
                    config = self._exchange.config
                    self._own = make_client(self._exchange.client_options, config.max_connections)
                    self._made_in = generation()
                own = self._own
        return own

    def _lease(self) -> AbstractContextManager[httpx.Client]:
        return nullcontext(self.http_client)

    def close(self) -> None:
        """Close promptwire's pool (a new one opens on demand). A client the user passed in is
        the user's to close."""
        if self._own is not None and self._made_in == generation():  # not a parent's
            self._own.close()
        self._own = None

    # -- the same as the async shell, without await --------------------------------------------

    def complete(self, payload: Mapping[str, Any]) -> PromptResponse:
        call = self._exchange.call(payload, stream=False)
        with call.naming():
            return self._retrying(call, lambda: self._complete_once(call))

    def _complete_once(self, call: Call) -> PromptResponse:
        response, body = self._whole(call)
        return call.reply(response, body)

    def health(self) -> httpx.Response | None:
        """``GET <endpoint>/health``, once, or None when it could not be had."""
        call = self._exchange.health_call()
        try:
            response, body = self._whole(call)
        except EndpointError:
            return None
        return call.health(response, body)

    def protocol_health(self) -> httpx.Response:
        """``GET <endpoint>/health``, retried as a call is, for the protocol it says; raises
        what kept the answer away (see ``Call.protocol_health``)."""
        call = self._exchange.health_call(tries=True)
        with call.naming():
            return self._retrying(call, lambda: self._protocol_health_once(call))

    def _protocol_health_once(self, call: Call) -> httpx.Response:
        response, body = self._whole(call)
        return call.protocol_health(response, body)

    def stream(self, payload: Mapping[str, Any]) -> Generator[StreamEvent, None, None]:
        """Yield ``StreamDelta``s (and, from a reasoning model, ``ReasoningDelta``s; v1.2:
        ``StreamToolCall``s), then one ``StreamDone``. A server that does not stream is read as
        one whole reply."""
        call = self._exchange.call(payload, stream=True)
        with self._lease() as client:  # held until the stream is closed
            with call.naming():
                response = self._retrying(call, lambda: self._open(client, call))
            try:
                with call.naming(), self._exchange.translating():
                    deadline = call.deadline()
                    if not is_event_stream(response):
                        with within(deadline):
                            body = self._read(response, call, deadline)
                        for whole in whole_reply_as_stream(call.reply(response, body)):
                            yield whole
                        return
                    with closing(self._events(response, call, deadline)) as events:
                        while True:
                            with within(deadline):
                                event = next(events, None)
                            if event is None:
                                return
                            yield event
                            if isinstance(event, StreamDone):
                                return
                            deadline.reset()
            finally:
                response.close()

    def _retrying(self, call: Call, attempt: Callable[[], T]) -> T:
        while True:
            try:
                return attempt()
            except EndpointError as exc:
                if (wait := call.wait_after(exc)) is None:
                    raise
            sleep(wait)

    def _whole(self, call: Call) -> tuple[httpx.Response, bytes]:
        """One attempt's whole reply, read."""
        deadline = call.deadline()
        turn = Turn()
        with self._lease() as client, self._exchange.translating(turn):
            with within(deadline):
                response = self._send(client, call, turn)
                return response, self._read(response, call, deadline)

    def _open(self, client: httpx.Client, call: Call) -> httpx.Response:
        """One attempt to open a stream: its response once the status says success."""
        deadline = call.deadline()
        turn = Turn()
        with self._exchange.translating(turn):
            with within(deadline):
                response = self._send(client, call, turn)
                if response.is_success:
                    return response
                body = self._read(response, call, deadline)
        raise call.status_error(response, body)

    def _send(self, client: httpx.Client, call: Call, turn: Turn) -> httpx.Response:
        """The call's request, and its redirects followed through the guard (a redirect is not
        authenticated anew: httpx's own way)."""
        request = call.request(client, turn, self._options)
        for hop in range(client.max_redirects + 1):
            auth = None if hop else httpx.USE_CLIENT_DEFAULT
            response = client.send(request, stream=True, follow_redirects=False, auth=auth)
            if response.next_request is None:
                return response
            self._discard(response)
            if hop == client.max_redirects:
                break
            request = call.checked(response.next_request, self._options)
        raise call.too_many_redirects()

    def _read(self, response: httpx.Response, call: Call, deadline: Deadline) -> bytes:
        """The whole body, decoded and bounded; the response is closed."""
        try:
            decoder = call.body_decoder(response)
            body = bytearray()
            for raw in response.iter_raw():
                for piece in decoder.feed(raw):
                    body += piece
                deadline.check()
            for piece in decoder.flush():
                body += piece
            return bytes(body)
        finally:
            response.close()

    def _discard(self, response: httpx.Response) -> None:
        """A redirect's body, read so its connection can serve the next request (up to the
        reply limit); the response is closed."""
        left = self._exchange.config.max_reply_bytes
        try:
            for raw in response.iter_raw():
                left -= len(raw)
                if left < 0:
                    break
        finally:
            response.close()

    def _events(
        self, response: httpx.Response, call: Call, deadline: Deadline
    ) -> Generator[StreamEvent, None, None]:
        """The stream's events; bytes that bring none (pings) do not put the deadline off."""
        decoder = call.events(response)
        for raw in response.iter_raw():
            for event in decoder.feed(raw):
                yield event
            deadline.check()
        for event in decoder.end():
            yield event
