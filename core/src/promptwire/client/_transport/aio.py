"""The async I/O shell: ``promptwire.client._transport.sync`` with ``await``.

Below ``aclose`` the two modules say the same, method for method, once ``await`` and the async
names are taken out (tests/unit/test_client_shells.py checks). What they do not share is how they
hold connections (here: pools per event loop) and how a deadline bounds a wait: here
``asyncio.timeout`` cancels the await, in the sync shell httpx's own timeouts bound each wait and
the clock is checked after it.
"""

from __future__ import annotations

import asyncio
from asyncio import sleep
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, aclosing, nullcontext
from types import TracebackType
from typing import Any, TypeVar

import httpx

from promptwire.client._transport.errors import AsyncTurn
from promptwire.client._transport.exchange import (
    Call,
    Deadline,
    Exchange,
    is_event_stream,
    whole_reply_as_stream,
)
from promptwire.client._transport.pools import AsyncPools, PoolsPerLoop
from promptwire.client.wire import StreamEvent
from promptwire.errors import EndpointError
from promptwire.protocol import PromptResponse, StreamDone

T = TypeVar("T")


class _Within:
    __slots__ = ("_deadline", "_timeout")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._timeout = asyncio.timeout(deadline.remaining())

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as timed_out:
            raise self._deadline.expired() from timed_out


def within(deadline: Deadline) -> _Within:
    """A block whose awaits are cancelled at ``deadline``, which then raises its timeout."""
    return _Within(deadline)


class AsyncEndpointClient:
    """Calls one endpoint from async code, through promptwire's pools or the user's client."""

    def __init__(self, exchange: Exchange, http_client: httpx.AsyncClient | None = None) -> None:
        self._exchange = exchange
        self._given = http_client
        self._options = {} if http_client is None else exchange.given_client_options()
        config = exchange.config
        self._pools = PoolsPerLoop(
            lambda: AsyncPools(exchange.client_options, config.max_connections)
        )

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The httpx client the running loop's sequential calls use."""
        if self._given is not None:
            return self._given
        return self._pools.current().client(0)

    def _lease(self) -> AbstractContextManager[httpx.AsyncClient]:
        """A client for one call: the user's, else the running loop's pool with most room."""
        if self._given is not None:
            return nullcontext(self._given)
        return self._pools.current().lease()

    async def aclose(self) -> None:
        """Close the running loop's pools (other loops' close with their loops). A client the
        user passed in is the user's to close."""
        await self._pools.aclose_current()

    # -- the same as the sync shell, with await ------------------------------------------------

    async def complete(self, payload: Mapping[str, Any]) -> PromptResponse:
        call = self._exchange.call(payload, stream=False)
        with call.naming():
            return await self._retrying(call, lambda: self._complete_once(call))

    async def _complete_once(self, call: Call) -> PromptResponse:
        response, body = await self._whole(call)
        return call.reply(response, body)

    async def health(self) -> httpx.Response | None:
        """``GET <endpoint>/health``, once, or None when it could not be had."""
        call = self._exchange.health_call()
        try:
            response, body = await self._whole(call)
        except EndpointError:
            return None
        return call.health(response, body)

    async def protocol_health(self) -> httpx.Response:
        """``GET <endpoint>/health``, retried as a call is, for the protocol it says; raises
        what kept the answer away (see ``Call.protocol_health``)."""
        call = self._exchange.health_call(tries=True)
        with call.naming():
            return await self._retrying(call, lambda: self._protocol_health_once(call))

    async def _protocol_health_once(self, call: Call) -> httpx.Response:
        response, body = await self._whole(call)
        return call.protocol_health(response, body)

    async def stream(self, payload: Mapping[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        """Yield ``StreamDelta``s (and, from a reasoning model, ``ReasoningDelta``s; v1.2:
        ``StreamToolCall``s), then one ``StreamDone``. A server that does not stream is read as
        one whole reply."""
        call = self._exchange.call(payload, stream=True)
        with self._lease() as client:  # held until the stream is closed
            with call.naming():
                response = await self._retrying(call, lambda: self._open(client, call))
            try:
                with call.naming(), self._exchange.translating():
                    deadline = call.deadline()
                    if not is_event_stream(response):
                        async with within(deadline):
                            body = await self._read(response, call, deadline)
                        for whole in whole_reply_as_stream(call.reply(response, body)):
                            yield whole
                        return
                    async with aclosing(self._events(response, call, deadline)) as events:
                        while True:
                            async with within(deadline):
                                event = await anext(events, None)
                            if event is None:
                                return
                            yield event
                            if isinstance(event, StreamDone):
                                return
                            deadline.reset()
            finally:
                await response.aclose()

    async def _retrying(self, call: Call, attempt: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await attempt()
            except EndpointError as exc:
                if (wait := call.wait_after(exc)) is None:
                    raise
            await sleep(wait)

    async def _whole(self, call: Call) -> tuple[httpx.Response, bytes]:
        """One attempt's whole reply, read."""
        deadline = call.deadline()
        turn = AsyncTurn()
        with self._lease() as client, self._exchange.translating(turn):
            async with within(deadline):
                response = await self._send(client, call, turn)
                return response, await self._read(response, call, deadline)

    async def _open(self, client: httpx.AsyncClient, call: Call) -> httpx.Response:
        """One attempt to open a stream: its response once the status says success."""
        deadline = call.deadline()
        turn = AsyncTurn()
        with self._exchange.translating(turn):
            async with within(deadline):
                response = await self._send(client, call, turn)
                if response.is_success:
                    return response
                body = await self._read(response, call, deadline)
        raise call.status_error(response, body)

    async def _send(self, client: httpx.AsyncClient, call: Call, turn: AsyncTurn) -> httpx.Response:
        """The call's request, and its redirects followed through the guard (a redirect is not
        authenticated anew: httpx's own way)."""
        request = call.request(client, turn, self._options)
        for hop in range(client.max_redirects + 1):
            auth = None if hop else httpx.USE_CLIENT_DEFAULT
            response = await client.send(request, stream=True, follow_redirects=False, auth=auth)
            if response.next_request is None:
                return response
            await self._discard(response)
            if hop == client.max_redirects:
                break
            request = call.checked(response.next_request, self._options)
        raise call.too_many_redirects()

    async def _read(self, response: httpx.Response, call: Call, deadline: Deadline) -> bytes:
        """The whole body, decoded and bounded; the response is closed."""
        try:
            decoder = call.body_decoder(response)
            body = bytearray()
            async for raw in response.aiter_raw():
                for piece in decoder.feed(raw):
                    body += piece
                deadline.check()
            for piece in decoder.flush():
                body += piece
            return bytes(body)
        finally:
            await response.aclose()

    async def _discard(self, response: httpx.Response) -> None:
        """A redirect's body, read so its connection can serve the next request (up to the
        reply limit); the response is closed."""
        left = self._exchange.config.max_reply_bytes
        try:
            async for raw in response.aiter_raw():
                left -= len(raw)
                if left < 0:
                    break
        finally:
            await response.aclose()

    async def _events(
        self, response: httpx.Response, call: Call, deadline: Deadline
    ) -> AsyncGenerator[StreamEvent, None]:
        """The stream's events; bytes that bring none (pings) do not put the deadline off."""
        decoder = call.events(response)
        async for raw in response.aiter_raw():
            for event in decoder.feed(raw):
                yield event
            deadline.check()
        for event in decoder.end():
            yield event
