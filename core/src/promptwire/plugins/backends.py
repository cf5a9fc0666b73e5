"""What a plugin registers: a backend, with both sides of reaching a model.

Client side: a ``ClientAdapter`` (default parameters and headers, and the wire format: the prompt
protocol unless the backend speaks another). Server side, optionally: an engine factory for
``promptwire serve`` and the module of a Modal app for ``promptwire deploy``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, cast, get_args, get_origin

from pydantic_settings import BaseSettings
from typing_extensions import TypeVar

from promptwire.errors import ConfigurationError, PluginError
from promptwire.settings import read_settings

if TYPE_CHECKING:  # the client path never needs the server side
    import httpx

    from promptwire.client import ClientConfig, EndpointClient
    from promptwire.client.wire import WireFormat
    from promptwire.engine import Engine

#: A backend's name, matched whole (``fullmatch``: ``$`` would let a trailing newline through).
BACKEND_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

SettingsT = TypeVar("SettingsT", bound=BaseSettings, default=BaseSettings)
"""A backend's settings class; ``BaseSettings`` (empty) for a backend without one."""

SettingsT_contra = TypeVar(
    "SettingsT_contra", bound=BaseSettings, default=BaseSettings, contravariant=True
)
"""The settings a ``ClientAdapter`` reads (contravariant: it only takes them)."""


class ClientAdapter(Generic[SettingsT_contra]):
    """How the client talks to a backend's endpoint beyond the plain protocol.

    Typed by the backend's settings class like ``Backend``: ``class MyAdapter(ClientAdapter[
    MySettings])`` gets ``MySettings`` in every method, and mypy checks it is the class the
    backend's ``settings_class`` makes. Each method is given ``Backend.load_settings()``'s result.
    """

    def default_params(self, settings: SettingsT_contra) -> dict[str, Any]:
        """Generation parameters sent with every request unless the caller sets them."""
        return {}

    def headers(self, settings: SettingsT_contra) -> dict[str, str]:
        """Extra HTTP headers sent with every request."""
        return {}

    def wire_format(self, settings: SettingsT_contra) -> WireFormat:
        """What requests and replies look like; called once per model object. The client's
        transport (timeouts, retries, redirects, auth, bounded reading, typed errors) is the
        same whatever this returns."""
        from promptwire.client.wire import PROMPT_PROTOCOL

        return PROMPT_PROTOCOL

    def endpoint_client(
        self,
        settings: SettingsT_contra,
        config: ClientConfig,
        *,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> EndpointClient:
        """The client a model object sends through, made once on its first call: one
        ``EndpointClient`` for ``config``'s endpoint. A backend that spreads calls over several
        endpoints (``router``) returns its own, with the same methods."""
        from promptwire.client import EndpointClient

        return EndpointClient(config, http_client=http_client, http_async_client=http_async_client)


@dataclass(frozen=True)
class Backend(Generic[SettingsT]):
    """A backend: its name, its settings, and what reaches or serves its model.

    Typed by its settings class, so mypy checks that ``create_engine`` and ``client`` take what
    ``settings_class`` makes: ``Backend(name="mine", settings_class=MySettings,
    create_engine=make_engine, client=MyAdapter())`` with ``def make_engine(settings:
    MySettings) -> Engine`` and ``class MyAdapter(ClientAdapter[MySettings])``.
    """

    name: str
    description: str = ""
    settings_class: type[SettingsT] | None = None
    """Its settings (``backend_settings_config`` makes them ``PROMPTWIRE_<NAME>__*``)."""
    client: ClientAdapter[SettingsT] = field(default_factory=ClientAdapter)
    """How the client reaches the endpoint; the plain prompt protocol by default."""
    create_engine: Callable[[SettingsT], Engine[Any]] | None = None
    """Builds the engine for ``promptwire serve`` from ``load_settings()``'s result."""
    modal_app: str | None = None
    """Import path of the module that defines the backend's ``modal.App`` (for deploy)."""
    engine_process: bool = False
    """Whether ``promptwire serve`` runs the engine in a supervised process of its own by
    default (``PROMPTWIRE_ENGINE_PROCESS`` overrides it): for engines in native code that can
    abort. ``create_engine`` must then be a module-level function and the settings picklable."""

    def __post_init__(self) -> None:
        if not BACKEND_NAME.fullmatch(self.name):
            raise PluginError(
                f"invalid backend name {self.name!r}: use lowercase letters, digits and '_'"
            )
        # mypy checks this too, but not inside ``register(Backend(...))``, where it cannot tell
        # a conflict from a type it failed to infer: so a mismatch fails when the plugin loads.
        reads, given = _adapter_settings(self.client), self.settings_class or BaseSettings
        if not issubclass(given, reads):
            raise PluginError(
                f"backend {self.name!r}: its client adapter {type(self.client).__name__} reads "
                f"{reads.__name__}, but its settings_class is {given.__name__}"
            )

    def load_settings(self, **overrides: Any) -> SettingsT:
        """The backend's settings: ``overrides`` beat the environment, which beats defaults.

        A backend without a settings class gets an empty ``BaseSettings`` and no overrides.
        """
        if self.settings_class is None:
            if overrides:
                raise ConfigurationError(
                    f"backend {self.name!r} has no settings; cannot set {', '.join(overrides)}"
                )
            return cast(SettingsT, BaseSettings())
        # Backend settings ignore unknown keys (a .env shared by several backends), so an
        # override the class lacks (``serve --model-dir`` for a backend that loads a file)
        # would vanish without a word.
        unknown = [name for name in overrides if name not in self.settings_class.model_fields]
        if unknown:
            raise ConfigurationError(
                f"backend {self.name!r} has no setting {', '.join(unknown)}; its settings: "
                f"{', '.join(self.settings_class.model_fields)}"
            )
        return read_settings(self.settings_class, **overrides)


def _adapter_settings(adapter: ClientAdapter[Any]) -> type[BaseSettings]:
    """The settings class an adapter is typed by (``ClientAdapter[MySettings]``, in its class's
    bases), or ``BaseSettings`` for one that reads any."""
    generics = [getattr(adapter, "__orig_class__", None)]
    generics += [
        base for cls in type(adapter).__mro__ for base in getattr(cls, "__orig_bases__", ())
    ]
    for generic in generics:
        if get_origin(generic) is ClientAdapter:
            (argument,) = get_args(generic)
            if isinstance(argument, type) and issubclass(argument, BaseSettings):
                return argument
            return BaseSettings
    return BaseSettings


class RegisterBackend(Protocol):
    """The ``register`` callback of the ``register_backends`` hook; annotate it with this, and
    mypy checks every ``Backend`` passed to it against its settings class (``create_engine``;
    a client adapter typed by other settings is refused when the plugin loads)."""

    def __call__(self, backend: Backend[SettingsT], /) -> None: ...


__all__ = [
    "BACKEND_NAME",
    "Backend",
    "ClientAdapter",
    "RegisterBackend",
    "SettingsT",
]
