"""What a plugin registers: a backend, with both sides of reaching a model.

Client side: a ``ClientAdapter`` (default parameters and headers, and the wire format: the prompt
protocol unless the backend speaks another). Server side, optionally: an engine factory for
``promptwire serve`` and the module of a Modal app for ``promptwire deploy``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings

from promptwire.errors import PluginError

if TYPE_CHECKING:  # the client path never needs the server side
    from promptwire.engine import Engine
    from promptwire.wire import WireFormat

BACKEND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ClientAdapter:
    """How the client talks to a backend's endpoint beyond the plain protocol."""

    def default_params(self, settings: BaseSettings | None) -> dict[str, Any]:
        """Generation parameters sent with every request unless the caller sets them."""
        return {}

    def headers(self, settings: BaseSettings | None) -> dict[str, str]:
        """Extra HTTP headers sent with every request."""
        return {}

    def wire_format(self, settings: BaseSettings | None) -> WireFormat:
        """What requests and replies look like; called once per model object. The client's
        transport (timeouts, retries, redirects, auth, bounded reading, typed errors) is the
        same whatever this returns."""
        from promptwire.wire import PROMPT_PROTOCOL

        return PROMPT_PROTOCOL


@dataclass(frozen=True)
class Backend:
    name: str
    description: str = ""
    settings_class: type[BaseSettings] | None = None
    client: ClientAdapter = field(default_factory=ClientAdapter)
    create_engine: Callable[[Any], Engine] | None = None
    """Builds the engine from an instance of ``settings_class`` (or None without one)."""
    modal_app: str | None = None
    """Import path of the module that defines the backend's ``modal.App`` (for deploy)."""

    def __post_init__(self) -> None:
        if not BACKEND_NAME.match(self.name):
            raise PluginError(
                f"invalid backend name {self.name!r}: use lowercase letters, digits and '_'"
            )

    def load_settings(self, **overrides: Any) -> BaseSettings | None:
        """The backend's settings: ``overrides`` beat the environment, which beats defaults."""
        if self.settings_class is None:
            return None
        return self.settings_class(**overrides)
