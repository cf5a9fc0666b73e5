"""What ``PromptwireLLM`` and ``ChatPromptwire`` share: the endpoint, how to reach it, and the
generation parameters sent to it.

``EndpointModel`` has the connection fields of ``promptwire.settings.ClientSettings`` (declared
there once, for the environment, these models and the HTTP client alike) and fills those not given
from ``PromptwireSettings``: arguments beat ``PROMPTWIRE_*`` variables and ``.env``, which beat
defaults. It applies the backend's client adapter and owns one pooled ``EndpointClient`` per
object, made on first use: fields changed after that first call do not reach it. Its generation
fields have the protocol's own types, so a value the server would refuse is refused when the model
is made. ``run_concurrently`` and ``arun_concurrently`` run a batch with at most
``max_concurrency`` requests in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal, Self, TypeVar

import httpx
from langchain_core.language_models import LangSmithParams
from langchain_core.load.serializable import (
    SerializedConstructor,
    SerializedNotImplemented,
    to_json_not_implemented,
)
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings

from promptwire.client import (
    ClientConfig,
    EndpointClient,
    check_header_secret,
    parse_endpoint_url,
)
from promptwire.client._transport.forks import ForkSafeLock
from promptwire.client.wire import PROMPT_PROTOCOL, WireFormat
from promptwire.plugins.backends import ClientAdapter
from promptwire.protocol import MaxTokens, Seed, StopSequences, Temperature, TopK, TopP
from promptwire.settings import (
    ClientSettings,
    ConnectionSettings,
    PromptwireSettings,
    read_settings,
)

PROVIDER = "promptwire"

#: The fields a model takes from ``PromptwireSettings`` when not given as arguments.
FROM_SETTINGS = tuple(ClientSettings.model_fields)

SECRET_FIELDS = ("api_key", "modal_key", "modal_secret")

# Generation fields sent as request parameters of the same name (``stop`` is sent per call).
GENERATION_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "seed")

# The client is made on first use, which can come from a batch's threads at once.
_MAKING_CLIENT = ForkSafeLock()

# What the default adapter is given when no backend is set: empty settings, as a backend without a
# settings class gets (``Backend.load_settings``).
_NO_SETTINGS = BaseSettings()

T = TypeVar("T")
R = TypeVar("R")


class EndpointModel(ClientSettings):
    """The endpoint fields of a promptwire LangChain model, and its pooled client."""

    # ``model_kwargs`` is LangChain's name for it; pydantic before 2.10 reserves every ``model_``
    # name and warns on import without this.
    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Parameters sent with every request (any key; the fields below take precedence)."""

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
    # The backend's adapter and the settings it is typed by, paired at run time: a model object
    # may use any backend, so its settings class is only known as ``Any`` here.
    _adapter: ClientAdapter[Any] = PrivateAttr(default_factory=ClientAdapter)
    _backend_settings: BaseSettings = PrivateAttr(default=_NO_SETTINGS)
    _wire: WireFormat = PrivateAttr(default=PROMPT_PROTOCOL)
    _backend_in_code: bool = PrivateAttr(default=False)
    """The backend was set up in code (``use_backend``): its settings are in this object only."""

    @model_validator(mode="after")
    def _fill_from_settings(self) -> Self:
        if missing := [name for name in FROM_SETTINGS if name not in self.model_fields_set]:
            settings = read_settings(PromptwireSettings)
            for name in missing:
                object.__setattr__(self, name, getattr(settings, name))
        parse_endpoint_url(self.endpoint_url)  # a typo fails here, not at the first call
        for name in SECRET_FIELDS:  # a stray newline fails here, not in a header, quoted
            secret: SecretStr | None = getattr(self, name)
            if secret is not None:
                check_header_secret(name, secret.get_secret_value())
        if self.backend:
            from promptwire.plugins import get_backend

            backend = get_backend(self.backend).backend
            self._use_backend(self.backend, backend.client, backend.load_settings())
        return self

    def use_backend(self, name: str, adapter: ClientAdapter[Any], settings: BaseSettings) -> None:
        """Call through ``adapter`` with ``settings`` from now on, as backend ``name``: what
        ``PROMPTWIRE_BACKEND`` does, for a backend built in code (``promptwire.router.routed``).
        The adapter checks the settings here, not at the first call. Such a model does not
        serialize: ``dumps`` writes it as not implemented, which ``loads`` refuses (it would
        come back with the backend's settings of the environment, not these)."""
        self._use_backend(name, adapter, settings)
        self._backend_in_code = True

    def _use_backend(self, name: str, adapter: ClientAdapter[Any], settings: BaseSettings) -> None:
        wire = adapter.wire_format(settings)
        object.__setattr__(self, "backend", name)
        self._adapter, self._backend_settings, self._wire = adapter, settings, wire

    def to_json(self) -> SerializedConstructor | SerializedNotImplemented:
        """LangChain's serialized form; the models put this class before LangChain's, whose
        ``to_json`` (with the model's ``name``) comes next."""
        if self._backend_in_code:
            return to_json_not_implemented(self)
        serialized: SerializedConstructor | SerializedNotImplemented
        serialized = super().to_json()  # type: ignore[misc]
        return serialized

    @model_validator(mode="after")
    def _each_parameter_given_once(self) -> Self:
        twice = [name for name in (*GENERATION_FIELDS, "stop") if name in self.model_kwargs]
        if twice := [name for name in twice if getattr(self, name) is not None]:
            raise ValueError(
                f"Found {', '.join(twice)} supplied twice: as a field and in model_kwargs"
            )
        return self

    # -- copies: a copy opens connections of its own -------------------------------------------

    #: The private attributes that hold connections (made on first use, and again in a copy).
    _CONNECTED: ClassVar[tuple[str, ...]] = ("_client",)

    def __getstate__(self) -> dict[Any, Any]:
        """Pickled (for a process pool, say) without its connections, which the copy opens
        anew on first use. A model given its own httpx client is not pickled: that client
        holds connections and locks, and the copy would reach the endpoint another way."""
        if self.http_client is not None or self.http_async_client is not None:
            raise TypeError(
                f"a {type(self).__name__} given http_client or http_async_client cannot be "
                "pickled: make it where it is used"
            )
        state: dict[Any, Any] = super().__getstate__()
        unmade = dict.fromkeys(self._CONNECTED, None)
        state["__pydantic_private__"] = {**state["__pydantic_private__"], **unmade}
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A copy with connections of its own (made on first use), sharing the httpx clients
        the model was given, if any (they are the caller's)."""
        memo = {} if memo is None else memo
        for name in self._CONNECTED:
            if (connected := getattr(self, name)) is not None:
                memo[id(connected)] = None  # what ``deepcopy`` gives for it: none yet
        for given in (self.http_client, self.http_async_client):
            if given is not None:
                memo[id(given)] = given
        copied: Self = super().__deepcopy__(memo)
        return copied

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
        connection = {name: getattr(self, name) for name in ConnectionSettings.model_fields}
        config = ClientConfig(
            **connection, headers=self._adapter.headers(self._backend_settings), wire=self._wire
        )
        return self._adapter.endpoint_client(
            self._backend_settings,
            config,
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


def run_concurrently(call: Callable[[T], R], items: Sequence[T], limit: int) -> list[R]:
    """``[call(item) for item in items]``, with up to ``limit`` calls at once, in threads. The
    first error is raised once the calls already running have ended; calls not yet started are
    not made (a failed ``generate`` leaves no work behind that nobody will read)."""
    if len(items) <= 1:
        return [call(item) for item in items]
    # Set by the first call that fails: a thread taking its next item sees it and makes no call
    # (the caller's thread, which cancels the rest, may be woken long after the pool's threads
    # have run through every queued item).
    failed = threading.Event()

    def unless_failed(item: T) -> R:
        if failed.is_set():
            raise _NotMade
        try:
            return call(item)
        except BaseException:
            failed.set()
            raise

    pool = ThreadPoolExecutor(max(1, min(limit, len(items))), thread_name_prefix="promptwire")
    try:
        futures = [pool.submit(unless_failed, item) for item in items]
        try:
            return [future.result() for future in futures]
        except _NotMade:  # a call after one that failed, which came later in the list
            pass
        errors = (future.exception() for future in futures)
        raise next(e for e in errors if e is not None and not isinstance(e, _NotMade))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _NotMade(Exception):
    """A call not made because another had failed."""


async def arun_concurrently(
    call: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int
) -> list[R]:
    """``[await call(item) for item in items]``, with up to ``limit`` calls at once. The first
    error cancels the other calls (the server stops generating what nobody will read), then is
    raised; so does the caller's own cancellation."""
    gate = asyncio.Semaphore(max(1, limit))

    async def one(item: T) -> R:
        async with gate:
            return await call(item)

    calls = [asyncio.ensure_future(one(item)) for item in items]
    try:
        return list(await asyncio.gather(*calls))
    except BaseException:
        for running in calls:
            running.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        raise
