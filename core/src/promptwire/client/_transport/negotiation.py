"""Protocol-version negotiation for requests that carry a conversation, kept beside the client
that sends them so the chat model only builds payloads.

v1.1: a request's ``messages`` refused as invalid (400/422) is sent again without them, by the
plain template's ``prompt``, only when the server does not say on ``/health`` that it speaks v1.1
(a v1.1 server's refusal is about something else and is reported); after that, this endpoint gets
no ``messages``. v1.2: tools, JSON response formats and tool messages go only to a server that
says on ``/health`` it speaks 1.2, since an older one would ignore them and answer free text;
that ``/health`` is asked with a call's retries, and a server down, loading or overloaded fails
the call as such (retried, and a router moves on), not as an older server.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Mapping
from contextlib import closing
from typing import TYPE_CHECKING, Any

import httpx

from promptwire.errors import InvalidRequestError, UnsupportedFeatureError
from promptwire.protocol import PromptResponse

if TYPE_CHECKING:
    from promptwire.client import EndpointClient, StreamEvent


class ConversationNegotiator:
    """What one endpoint has shown it speaks, and the calls that act on it. ``fallback``: the
    wire format has the v1 ``prompt`` to fall back on (the prompt protocol; not the OpenAI API,
    which has these fields natively)."""

    def __init__(self, client: EndpointClient, *, fallback: bool) -> None:
        self.client = client
        self.fallback = fallback
        self.send_messages = True
        self.speaks_v12 = False

    # -- v1.2 ------------------------------------------------------------------------------------

    def needs_v12(self, payload: Mapping[str, Any]) -> bool:
        if not self.fallback or self.speaks_v12:
            return False
        if payload.get("tools") or asks_json(payload.get("response_format")):
            return True
        return any(
            m.get("role") == "tool" or m.get("tool_calls") for m in payload.get("messages") or ()
        )

    def check_v12(self, health: httpx.Response) -> None:
        """Raise ``UnsupportedFeatureError`` unless ``health`` (``protocol_health``'s answer:
        a success or a 404/405) says 1.2 or later."""
        version = protocol_version(health)
        if version is not None and version >= (1, 2):
            self.speaks_v12 = True
            return
        said = (
            f"its /health answered {health.status_code}"
            if health.status_code != 200
            else f"it speaks protocol {'.'.join(map(str, version or (1, 0)))}"
        )
        raise UnsupportedFeatureError(
            "tool calling and structured output need a server that speaks protocol 1.2 or later "
            f"({said}); an older one would ignore them and answer free text",
            url=self.client.config.endpoint_url,
        )

    # -- v1.1 ------------------------------------------------------------------------------------

    def _may_fall_back(self, payload: Mapping[str, Any], exc: InvalidRequestError) -> bool:
        return self.fallback and "messages" in payload and exc.status_code in (400, 422)

    def _falls_back(self, payload: Mapping[str, Any], exc: InvalidRequestError) -> bool:
        if not self._may_fall_back(payload, exc):
            return False
        health = self.client.health()
        return health is None or not understands_messages(health)

    async def _afalls_back(self, payload: Mapping[str, Any], exc: InvalidRequestError) -> bool:
        if not self._may_fall_back(payload, exc):
            return False
        health = await self.client.ahealth()
        return health is None or not understands_messages(health)

    # -- calls -----------------------------------------------------------------------------------

    def complete(self, payload: dict[str, Any]) -> PromptResponse:
        if self.needs_v12(payload):
            self.check_v12(self.client.protocol_health())
        try:
            return self.client.complete(payload)
        except InvalidRequestError as exc:
            if not self._falls_back(payload, exc):
                raise
            reply = self.client.complete(without_messages(payload))
            self.send_messages = False
            return reply

    async def acomplete(self, payload: dict[str, Any]) -> PromptResponse:
        if self.needs_v12(payload):
            self.check_v12(await self.client.aprotocol_health())
        try:
            return await self.client.acomplete(payload)
        except InvalidRequestError as exc:
            if not await self._afalls_back(payload, exc):
                raise
            reply = await self.client.acomplete(without_messages(payload))
            self.send_messages = False
            return reply

    def stream(self, payload: dict[str, Any]) -> Generator[StreamEvent, None, None]:
        if self.needs_v12(payload):
            self.check_v12(self.client.protocol_health())
        events = self.client.stream(payload)
        try:
            first = next(events)
        except InvalidRequestError as exc:
            if not self._falls_back(payload, exc):
                raise
            events = self.client.stream(without_messages(payload))
            first = next(events)
            self.send_messages = False
        with closing(events):  # closed with this generator, even before its first event is read
            yield first
            yield from events

    async def astream(self, payload: dict[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        if self.needs_v12(payload):
            self.check_v12(await self.client.aprotocol_health())
        events = self.client.astream(payload)
        try:
            first = await anext(events)
        except InvalidRequestError as exc:
            if not await self._afalls_back(payload, exc):
                raise
            events = self.client.astream(without_messages(payload))
            first = await anext(events)
            self.send_messages = False
        try:
            yield first
            async for event in events:
                yield event
        finally:
            if isinstance(events, AsyncGenerator):  # close the response now, not when collected
                await events.aclose()


def asks_json(response_format: Any) -> bool:
    return isinstance(response_format, dict) and response_format.get("type") not in (None, "text")


def understands_messages(health: httpx.Response) -> bool:
    """Whether a ``/health`` answer says protocol 1.1 or later."""
    version = protocol_version(health)
    return version is not None and version >= (1, 1)


def protocol_version(health: httpx.Response) -> tuple[int, int] | None:
    """The protocol a ``/health`` answer says (``1.0`` without one); None unless it is a 200."""
    if health.status_code != 200:
        return None
    try:
        version = health.json().get("protocol", "1")
        major, minor, *_ = (int(part) for part in f"{version}.0".split("."))
    except (ValueError, AttributeError, TypeError):
        return (1, 0)
    return major, minor


def without_messages(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "messages"}
