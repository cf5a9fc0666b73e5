"""The client side of the ``openai`` backend: the OpenAI API as the wire format.

Set ``PROMPTWIRE_BACKEND=openai`` and ``PROMPTWIRE_ENDPOINT_URL`` to the server's base URL (the
one ending in ``/v1``) and ``PromptwireLLM`` calls its ``/completions``, ``ChatPromptwire`` its
``/chat/completions``, through promptwire's own client: its timeouts, safe retries, typed errors,
Modal proxy auth and 303 handling, bounded reading and concurrent batches.
"""

from __future__ import annotations

from typing import Any

from promptwire.client.wire import WireFormat
from promptwire.plugins.backends import ClientAdapter

from promptwire_openai.settings import OpenAISettings
from promptwire_openai.wire import OpenAIWire


class OpenAIAdapter(ClientAdapter[OpenAISettings]):
    def default_params(self, settings: OpenAISettings) -> dict[str, Any]:
        """The model from the settings, unless a call or ``model_kwargs`` names another."""
        return {"model": settings.model} if settings.model else {}

    def wire_format(self, settings: OpenAISettings) -> WireFormat:
        return OpenAIWire(stream_usage=settings.stream_usage)
