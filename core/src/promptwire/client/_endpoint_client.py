"""``EndpointClient``: the sync and async clients of one endpoint, from one ``ClientConfig``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Mapping
from typing import Any

import httpx

from promptwire.client._transport.aio import AsyncEndpointClient
from promptwire.client._transport.config import ClientConfig
from promptwire.client._transport.exchange import Exchange
from promptwire.client._transport.negotiation import ConversationNegotiator
from promptwire.client._transport.sync import SyncEndpointClient
from promptwire.client.wire import StreamEvent
from promptwire.protocol import PromptResponse


class EndpointClient:
    """Sends requests to one endpoint URL, in the wire format of its config, from sync or async
    code. ``http_client``/``http_async_client``: the user's httpx clients to send through (see
    the module's documentation for what they keep and what promptwire adds)."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.wire = config.wire
        exchange = Exchange(config)
        self.sync = SyncEndpointClient(exchange, http_client)
        self.aio = AsyncEndpointClient(exchange, http_async_client)

    def __repr__(self) -> str:
        return f"EndpointClient(url={self.config.endpoint_url!r})"

    def conversations(self, *, fallback: bool) -> ConversationNegotiator:
        """What sends this endpoint the calls that carry a conversation, negotiating the
        protocol version (v1.1's fallback without ``messages``, v1.2's check; ``fallback``: the
        wire format has v1's ``prompt`` to fall back on)."""
        return ConversationNegotiator(self, fallback=fallback)

    def complete(self, payload: Mapping[str, Any]) -> PromptResponse:
        return self.sync.complete(payload)

    async def acomplete(self, payload: Mapping[str, Any]) -> PromptResponse:
        return await self.aio.complete(payload)

    def stream(self, payload: Mapping[str, Any]) -> Generator[StreamEvent, None, None]:
        """Yield ``StreamDelta``s (and, from a reasoning model, ``ReasoningDelta``s; v1.2:
        ``StreamToolCall``s), then one ``StreamDone``. A server that does not stream is read as
        one whole reply."""
        return self.sync.stream(payload)

    def astream(self, payload: Mapping[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        return self.aio.stream(payload)

    def health(self) -> httpx.Response | None:
        """``GET <endpoint>/health``, once, or None when it could not be had."""
        return self.sync.health()

    async def ahealth(self) -> httpx.Response | None:
        return await self.aio.health()

    def protocol_health(self) -> httpx.Response:
        """``GET <endpoint>/health`` with a call's retries: a success, or a 404/405 (no
        ``/health``: a server older than protocol 1.1); raises what kept any other answer away
        (down, loading, overloaded, refusing the key)."""
        return self.sync.protocol_health()

    async def aprotocol_health(self) -> httpx.Response:
        return await self.aio.protocol_health()

    @property
    def sync_client(self) -> httpx.Client:
        """The httpx client sync calls go through."""
        return self.sync.http_client

    @property
    def async_client(self) -> httpx.AsyncClient:
        """The httpx client the running loop's sequential async calls go through."""
        return self.aio.http_client

    def close(self) -> None:
        """Close the sync pool (async pools belong to their loops; see ``aclose``)."""
        self.sync.close()

    async def aclose(self) -> None:
        """Close the running loop's async pools (other loops' pools close with their loops)."""
        await self.aio.aclose()
