"""``RouterClient``: an ``EndpointClient`` whose calls each go to one member of a ``Pool``.

Each member is an ``EndpointClient`` of its own (its pools, per event loop; its backend's wire
format and defaults), made with ``max_retries=0``: a failed member is left for another at once,
and the router, not the member, waits when all are down. A stream moves to another member only
before its first event; after that, an error reaches the caller and nothing is sent twice. Each
member negotiates the protocol version of conversations itself, so a call with tools goes only to
members that speak protocol 1.2.

A call has one deadline (``Attempts.ends``: the model's ``timeout`` from its start), and each
attempt at a member runs under it (``ending_by``): with four hundred members that refuse, a
call with ``timeout=2`` ends in two seconds, not four hundred times that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from contextlib import aclosing, closing
from typing import Any

import httpx

from promptwire.client import EndpointClient, StreamEvent
from promptwire.client._transport.exchange import ending_by
from promptwire.client._transport.negotiation import ConversationNegotiator
from promptwire.errors import EndpointError
from promptwire.protocol import PromptResponse, StreamDone
from promptwire.router._members import Member, Pool
from promptwire.router._served import routed_done, routed_reply


class RouterClient(EndpointClient):
    """Spreads calls over ``pool``'s members. ``config`` is the model's (its URL is unused)."""

    def __init__(self, pool: Pool, first: EndpointClient) -> None:
        # Not EndpointClient.__init__: a router has no connection of its own. ``config`` and
        # ``wire`` are its first member's, for what reads them (conversation negotiation).
        self.pool = pool
        self.config = first.config
        self.wire = first.wire

    def __repr__(self) -> str:
        return f"RouterClient(endpoints={[m.label for m in self.pool.members]!r})"

    def conversations(self, *, fallback: bool) -> ConversationNegotiator:
        """A router passes conversations through: each member negotiates its own protocol
        version (``Member.conversations``), and one that cannot take a call is passed over."""
        return ConversationNegotiator(self, fallback=False)

    # -- whole replies -------------------------------------------------------------------------

    def complete(self, payload: Mapping[str, Any]) -> PromptResponse:
        attempts = self.pool.start(self.config.timeout)
        while True:
            member = attempts.next()
            if isinstance(member, float):
                time.sleep(member)
                continue
            self.pool.begin(member)
            started = time.perf_counter()
            try:
                with ending_by(attempts.attempt_ends()):
                    reply = member.conversations.complete(member.payload(payload))
            except EndpointError as exc:
                if attempts.moves_on(member, exc):
                    continue
                raise
            finally:
                self.pool.end(member)
            self.pool.succeeded(member, time.perf_counter() - started)
            return routed_reply(reply, member.label)

    async def acomplete(self, payload: Mapping[str, Any]) -> PromptResponse:
        attempts = self.pool.start(self.config.timeout)
        while True:
            member = attempts.next()
            if isinstance(member, float):
                await asyncio.sleep(member)
                continue
            self.pool.begin(member)
            started = time.perf_counter()
            try:
                with ending_by(attempts.attempt_ends()):
                    reply = await member.conversations.acomplete(member.payload(payload))
            except EndpointError as exc:
                if attempts.moves_on(member, exc):
                    continue
                raise
            finally:
                self.pool.end(member)
            self.pool.succeeded(member, time.perf_counter() - started)
            return routed_reply(reply, member.label)

    # -- streams -------------------------------------------------------------------------------

    def stream(self, payload: Mapping[str, Any]) -> Generator[StreamEvent, None, None]:
        attempts = self.pool.start(self.config.timeout)
        while True:
            member = attempts.next()
            if isinstance(member, float):
                time.sleep(member)
                continue
            self.pool.begin(member)
            begun = False
            try:
                started = time.perf_counter()
                events = member.conversations.stream(member.payload(payload))
                with closing(events):
                    try:
                        with ending_by(attempts.attempt_ends()):  # the opening and the first event
                            first = next(events, None)
                    except EndpointError as exc:
                        if attempts.moves_on(member, exc):
                            continue
                        raise
                    if first is None:
                        return
                    begun = True
                    self.pool.succeeded(member, time.perf_counter() - started)
                    yield _routed(first, member)
                    for event in events:
                        yield _routed(event, member)
                    return
            except EndpointError as exc:
                if begun:  # after the first event the error is the caller's
                    self.pool.failed(member, exc)
                raise
            finally:
                self.pool.end(member)

    async def astream(self, payload: Mapping[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        attempts = self.pool.start(self.config.timeout)
        while True:
            member = attempts.next()
            if isinstance(member, float):
                await asyncio.sleep(member)
                continue
            self.pool.begin(member)
            begun = False
            try:
                started = time.perf_counter()
                events = member.conversations.astream(member.payload(payload))
                async with aclosing(events):
                    try:
                        with ending_by(attempts.attempt_ends()):
                            first = await anext(events, None)
                    except EndpointError as exc:
                        if attempts.moves_on(member, exc):
                            continue
                        raise
                    if first is None:
                        return
                    begun = True
                    self.pool.succeeded(member, time.perf_counter() - started)
                    yield _routed(first, member)
                    async for event in events:
                        yield _routed(event, member)
                    return
            except EndpointError as exc:
                if begun:
                    self.pool.failed(member, exc)
                raise
            finally:
                self.pool.end(member)

    # -- the rest of EndpointClient --------------------------------------------------------------

    def health(self) -> httpx.Response | None:
        """The first member's (in order, not cooling down) that answers."""
        for member in self._in_order():
            if (answer := member.client.health()) is not None:
                return answer
        return None

    async def ahealth(self) -> httpx.Response | None:
        for member in self._in_order():
            if (answer := await member.client.ahealth()) is not None:
                return answer
        return None

    def _in_order(self) -> list[Member]:
        now = time.monotonic()
        return [m for m in self.pool.members if m.cool_until <= now] or self.pool.members

    @property
    def sync_client(self) -> httpx.Client:
        """The first member's (each member has its own)."""
        return self.pool.members[0].client.sync_client

    @property
    def async_client(self) -> httpx.AsyncClient:
        return self.pool.members[0].client.async_client

    def close(self) -> None:
        for member in self.pool.members:
            member.client.close()

    async def aclose(self) -> None:
        for member in self.pool.members:
            await member.client.aclose()


def _routed(event: StreamEvent, member: Member) -> StreamEvent:
    return routed_done(event, member.label) if isinstance(event, StreamDone) else event
