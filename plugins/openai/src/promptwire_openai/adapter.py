"""The client side of the ``openai`` backend: the OpenAI API as the wire format.

Set ``PROMPTWIRE_BACKEND=openai`` and ``PROMPTWIRE_ENDPOINT_URL`` to the server's base URL (the
one ending in ``/v1``) and ``PromptwireLLM`` calls its ``/completions``, ``ChatPromptwire`` its
``/chat/completions``, through promptwire's own client: its timeouts, safe retries, typed errors,
Modal proxy auth and 303 handling, bounded reading and concurrent batches.
"""

from __future__ import annotations

from typing import Any

from promptwire.backends import ClientAdapter
from promptwire.wire import WireFormat
from pydantic_settings import BaseSettings

from promptwire_openai.settings import OpenAISettings
from promptwire_openai.wire import OpenAIWire


class OpenAIAdapter(ClientAdapter):
    def default_params(self, settings: BaseSettings | None) -> dict[str, Any]:
        """The model from the settings, unless a call or ``model_kwargs`` names another."""
        if isinstance(settings, OpenAISettings) and settings.model:
            return {"model": settings.model}
        return {}

    def wire_format(self, settings: BaseSettings | None) -> WireFormat:
        stream_usage = settings.stream_usage if isinstance(settings, OpenAISettings) else True
        return OpenAIWire(stream_usage=stream_usage)
