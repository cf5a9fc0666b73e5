"""Entry point of the ``router`` backend, registered like any plugin (core's own entry point)."""

from __future__ import annotations

from promptwire.plugins.backends import Backend, RegisterBackend
from promptwire.plugins.hookspecs import hookimpl


@hookimpl
def register_backends(register: RegisterBackend) -> None:
    from promptwire.router._adapter import RouterAdapter
    from promptwire.router._settings import BACKEND_NAME, RouterSettings

    register(
        Backend(
            name=BACKEND_NAME,
            description="Spreads calls over several endpoints (of any client backend), with "
            "failover and cooldown: client only.",
            settings_class=RouterSettings,
            client=RouterAdapter(),
        )
    )
