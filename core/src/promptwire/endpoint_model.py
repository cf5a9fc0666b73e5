"""What ``PromptwireLLM`` and ``ChatPromptwire`` share: where the endpoint is and how to reach it.

``EndpointModel`` holds the connection fields, fills those not given from ``PromptwireSettings``
(arguments beat ``PROMPTWIRE_*`` variables and ``.env``, which beat defaults), applies the
backend's client adapter and owns one pooled ``EndpointClient`` per object. ``run_concurrently``
and ``arun_concurrently`` run a batch with at most ``max_concurrency`` requests in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, model_validator

from promptwire.backends import ClientAdapter
from promptwire.client import ClientConfig, EndpointClient, parse_endpoint_url
from promptwire.settings import PromptwireSettings

MODAL_KEY_HEADER = "Modal-Key"
MODAL_SECRET_HEADER = "Modal-Secret"  # noqa: S105 (a header name)

# Fields taken from PromptwireSettings when not given explicitly.
FROM_SETTINGS = (
    "endpoint_url",
    "backend",
    "api_key",
    "modal_key",
    "modal_secret",
    "timeout",
    "connect_timeout",
    "max_retries",
    "retry_unsafe",
    "max_concurrency",
)

# The client is made on first use, which can come from a batch's threads at once.
_MAKING_CLIENT = threading.Lock()

T = TypeVar("T")
R = TypeVar("R")


class EndpointModel(BaseModel):
    """The endpoint fields of a promptwire LangChain model, and its pooled client."""

    endpoint_url: str | None = None
    """The endpoint's URL (``PROMPTWIRE_ENDPOINT_URL``)."""
    backend: str | None = None
    """Backend name (``PROMPTWIRE_BACKEND``); its plugin may add parameters and headers."""
    api_key: SecretStr | None = None
    """Bearer token (``PROMPTWIRE_API_KEY``)."""
    modal_key: SecretStr | None = None
    """Modal proxy-auth key, sent as ``Modal-Key`` (``PROMPTWIRE_MODAL_KEY``)."""
    modal_secret: SecretStr | None = None
    """Modal proxy-auth secret, sent as ``Modal-Secret`` (``PROMPTWIRE_MODAL_SECRET``)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Parameters sent with every request (``max_tokens``, ``temperature``, or any extra key)."""
    timeout: float | None = None
    """Seconds for a whole reply, or between two pieces of a stream."""
    connect_timeout: float | None = None
    max_retries: int | None = None
    retry_unsafe: bool | None = None
    """Also retry failures after which the server may have run the request."""
    max_concurrency: int | None = None
    """Requests of one batch in flight at once."""

    _client: EndpointClient | None = PrivateAttr(default=None)
    _adapter: ClientAdapter = PrivateAttr(default_factory=ClientAdapter)
    _backend_settings: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _fill_from_settings(self) -> Self:
        missing = [name for name in FROM_SETTINGS if getattr(self, name) is None]
        if missing:
            settings = PromptwireSettings()
            for name in missing:
                object.__setattr__(self, name, getattr(settings, name))
        if self.endpoint_url is not None:
            parse_endpoint_url(self.endpoint_url)  # a typo fails here, not at the first call
        if self.backend:
            from promptwire.plugins import get_backend

            backend = get_backend(self.backend).backend
            self._adapter = backend.client
            self._backend_settings = backend.load_settings()
        return self

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {
            "api_key": "PROMPTWIRE_API_KEY",
            "modal_key": "PROMPTWIRE_MODAL_KEY",
            "modal_secret": "PROMPTWIRE_MODAL_SECRET",
        }

    @property
    def client(self) -> EndpointClient:
        """The pooled client; made on first use so an unused model opens nothing."""
        if self._client is None:
            with _MAKING_CLIENT:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> EndpointClient:
        secret_headers = {}
        if self.modal_key is not None:
            secret_headers[MODAL_KEY_HEADER] = self.modal_key
        if self.modal_secret is not None:
            secret_headers[MODAL_SECRET_HEADER] = self.modal_secret
        assert self.endpoint_url is not None
        return EndpointClient(
            ClientConfig(
                url=self.endpoint_url,
                api_key=self.api_key,
                secret_headers=secret_headers,
                headers=self._adapter.headers(self._backend_settings),
                timeout=float(self.timeout or 600.0),
                connect_timeout=float(self.connect_timeout or 10.0),
                max_retries=int(self.max_retries or 0),
                retry_unsafe=bool(self.retry_unsafe),
                max_connections=max(100, int(self.max_concurrency or 1)),
            )
        )

    def _base_params(self) -> dict[str, Any]:
        """The backend's default parameters, overridden by ``model_kwargs``."""
        return {**self._adapter.default_params(self._backend_settings), **self.model_kwargs}

    def close(self) -> None:
        """Close the sync connection pool (the object stays usable; a new pool opens on demand)."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def run_concurrently(call: Callable[[T], R], items: Sequence[T], limit: int) -> list[R]:
    """``[call(item) for item in items]``, with up to ``limit`` calls at once, in threads."""
    if len(items) <= 1:
        return [call(item) for item in items]
    workers = max(1, min(limit, len(items)))
    with ThreadPoolExecutor(workers, thread_name_prefix="promptwire") as pool:
        return list(pool.map(call, items))


async def arun_concurrently(
    call: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int
) -> list[R]:
    """``[await call(item) for item in items]``, with up to ``limit`` calls at once."""
    gate = asyncio.Semaphore(max(1, limit))

    async def one(item: T) -> R:
        async with gate:
            return await call(item)

    return list(await asyncio.gather(*(one(item) for item in items)))
