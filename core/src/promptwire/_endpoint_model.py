"""What ``PromptwireLLM`` and ``ChatPromptwire`` share: the endpoint, how to reach it, and the
generation parameters sent to it.

``EndpointModel`` holds the connection fields, fills those not given from ``PromptwireSettings``
(arguments beat ``PROMPTWIRE_*`` variables and ``.env``, which beat defaults; both are checked by
the same types), applies the backend's client adapter and owns one pooled ``EndpointClient`` per
object. Its generation fields have the protocol's own types, so a value the server would refuse
is refused when the model is made. ``run_concurrently``
and ``arun_concurrently`` run a batch with at most ``max_concurrency`` requests in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Self, TypeVar

import httpx
from langchain_core.language_models import LangSmithParams
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)

from promptwire.backends import ClientAdapter
from promptwire.client import (
    ClientConfig,
    EndpointClient,
    check_header_secret,
    parse_endpoint_url,
)
from promptwire.errors import ConfigurationError
from promptwire.protocol import MaxTokens, Seed, StopSequences, Temperature, TopK, TopP
from promptwire.settings import Concurrency, PromptwireSettings, ReplyBytes, Retries, Seconds
from promptwire.wire import PROMPT_PROTOCOL, WireFormat

PROVIDER = "promptwire"
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
    "max_reply_bytes",
)

SECRET_FIELDS = ("api_key", "modal_key", "modal_secret")

# Generation fields sent as request parameters of the same name (``stop`` is sent per call).
GENERATION_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "seed")

# The client is made on first use, which can come from a batch's threads at once.
_MAKING_CLIENT = threading.Lock()

T = TypeVar("T")
R = TypeVar("R")


class EndpointModel(BaseModel):
    """The endpoint fields of a promptwire LangChain model, and its pooled client."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

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
    """Parameters sent with every request (any key; the fields below take precedence)."""
    timeout: Seconds | None = None
    """Seconds for a whole reply, or between two pieces of a stream."""
    connect_timeout: Seconds | None = None
    max_retries: Retries | None = None
    retry_unsafe: bool | None = None
    """Also retry failures after which the server may have run the request."""
    max_concurrency: Concurrency | None = None
    """Requests of one batch in flight at once."""
    max_reply_bytes: ReplyBytes | None = None
    """The most bytes of a whole reply, or of one event of a stream, once decoded."""

    # Generation parameters sent with every request (a call's keyword arguments beat them).
    max_tokens: MaxTokens | None = None
    """Most tokens to generate."""
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    seed: Seed | None = None
    stop: StopSequences | None = None
    """Stop sequences used when a call gives none."""

    http_client: httpx.Client | None = Field(default=None, exclude=True, repr=False)
    """An ``httpx.Client`` for sync calls instead of promptwire's pool: proxies, mTLS, a custom
    transport, an app served in-process (``httpx.ASGITransport``). promptwire's headers,
    timeouts, retries, redirect guard and cookie refusal still apply (``promptwire.client`` says
    exactly what the client keeps); promptwire never closes it. Never serialized."""
    http_async_client: httpx.AsyncClient | None = Field(default=None, exclude=True, repr=False)
    """The same for async calls (e.g. ``httpx_aiohttp.HttpxAiohttpClient()``); its connections
    belong to one event loop, so use it from one loop."""

    _client: EndpointClient | None = PrivateAttr(default=None)
    _adapter: ClientAdapter = PrivateAttr(default_factory=ClientAdapter)
    _backend_settings: Any = PrivateAttr(default=None)
    _wire: WireFormat = PrivateAttr(default=PROMPT_PROTOCOL)

    @model_validator(mode="after")
    def _fill_from_settings(self) -> Self:
        missing = [name for name in FROM_SETTINGS if getattr(self, name) is None]
        if missing:
            settings = PromptwireSettings()
            for name in missing:
                object.__setattr__(self, name, getattr(settings, name))
        if self.endpoint_url is not None:
            parse_endpoint_url(self.endpoint_url)  # a typo fails here, not at the first call
        for name in SECRET_FIELDS:  # a stray newline fails here, not in a header, quoted
            secret: SecretStr | None = getattr(self, name)
            if secret is not None:
                check_header_secret(name, secret.get_secret_value())
        if self.backend:
            from promptwire.plugins import get_backend

            backend = get_backend(self.backend).backend
            self._adapter = backend.client
            self._backend_settings = backend.load_settings()
            self._wire = self._adapter.wire_format(self._backend_settings)
        return self

    @model_validator(mode="after")
    def _each_parameter_given_once(self) -> Self:
        twice = [name for name in (*GENERATION_FIELDS, "stop") if name in self.model_kwargs]
        if twice := [name for name in twice if getattr(self, name) is not None]:
            raise ValueError(
                f"Found {', '.join(twice)} supplied twice: as a field and in model_kwargs"
            )
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
                timeout=_given(self.timeout),
                connect_timeout=_given(self.connect_timeout),
                max_retries=_given(self.max_retries),
                retry_unsafe=_given(self.retry_unsafe),
                max_connections=max(100, _given(self.max_concurrency)),
                max_reply_bytes=_given(self.max_reply_bytes),
                wire=self._wire,
            ),
            http_client=self.http_client,
            http_async_client=self.http_async_client,
        )

    def _base_params(self) -> dict[str, Any]:
        """The backend's default parameters, overridden by the model's name where the wire format
        sends one, by ``model_kwargs``, and by the generation fields that are set."""
        return {
            **self._adapter.default_params(self._backend_settings),
            **self._model_param(),
            **self.model_kwargs,
            **self._generation_params(),
        }

    def _model_param(self) -> dict[str, Any]:
        """``{"model": name}`` when this object names a model and the wire format sends it."""
        return {}

    def _generation_params(self) -> dict[str, Any]:
        """The generation fields that are set (``stop`` apart: see ``_stops``)."""
        return {
            name: value for name in GENERATION_FIELDS if (value := getattr(self, name)) is not None
        }

    def _tracing_params(
        self, model_type: Literal["llm", "chat"], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> LangSmithParams:
        """What LangSmith shows of a run: provider, model and the main generation parameters (a
        call's keyword arguments beat the model's fields)."""
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=model if isinstance(model, str) else self._default_model_name(),
            ls_model_type=model_type,
        )
        if (temperature := kwargs.get("temperature", self.temperature)) is not None:
            params["ls_temperature"] = temperature
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := self._stops(stop):
            params["ls_stop"] = stops
        return params

    def _default_model_name(self) -> str:
        """The model's name for tracing when no reply has named it: the model the backend's
        settings ask for (the ``openai`` backend's ``model``), else the backend's name."""
        named = self._adapter.default_params(self._backend_settings).get("model")
        return named if isinstance(named, str) else (self.backend or PROVIDER)

    def _stops(self, stop: list[str] | None) -> list[str] | None:
        """A call's stop sequences, else the model's."""
        stops = stop if stop is not None else self.stop
        return list(stops) if stops else None

    def close(self) -> None:
        """Close the sync connection pool (the object stays usable; a new pool opens on demand)."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _given(value: T | None) -> T:
    """A field that ``_fill_from_settings`` filled (only a later assignment of None undoes it)."""
    if value is None:
        raise ConfigurationError("a connection setting was set to None after the model was made")
    return value


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
