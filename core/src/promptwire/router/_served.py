"""Which member served a call, carried on the reply (or a stream's last event) so the LangChain
models can show it in ``generation_info`` / ``response_metadata`` under ``endpoint``."""

from __future__ import annotations

from typing import Any

from promptwire.client.wire import Reply
from promptwire.protocol import PromptResponse, StreamDone

ENDPOINT_KEY = "endpoint"


class RoutedReply(Reply):
    endpoint: str


class RoutedDone(StreamDone):
    endpoint: str


def routed_reply(reply: PromptResponse, endpoint: str) -> RoutedReply:
    # The instance's own dicts, not dict(reply): a third of the cost, paid on every routed call.
    fields: dict[str, Any] = {**reply.__dict__, **(reply.model_extra or {})}
    return RoutedReply.model_construct(**fields, endpoint=endpoint)


def routed_done(done: StreamDone, endpoint: str) -> RoutedDone:
    return RoutedDone.model_construct(**done.__dict__, endpoint=endpoint)


def served_by(result: PromptResponse | StreamDone) -> dict[str, str]:
    """``{"endpoint": member}`` for a routed reply or stream end, else nothing."""
    if isinstance(result, (RoutedReply, RoutedDone)):
        return {ENDPOINT_KEY: result.endpoint}
    return {}
