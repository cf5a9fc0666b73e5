"""The one way to build a served app from settings: ``promptwire serve`` and every Modal app."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from promptwire.engine import Engine
from promptwire.settings import PromptwireSettings

if TYPE_CHECKING:
    from fastapi import FastAPI


def app_from_settings(
    engine: Engine[Any],
    settings: PromptwireSettings | None = None,
    *,
    api_key: str | SecretStr | None = None,
    allowed_hosts: Collection[str] | None = None,
) -> FastAPI:
    """``create_app`` for ``engine`` with what ``settings`` say (default: read now from
    ``PROMPTWIRE_*`` and ``.env``): the limits, metrics and request log, the console page
    (``PROMPTWIRE_CONSOLE``), and the bearer token (``PROMPTWIRE_API_KEY``, which a Modal Secret
    sets in a container); ``api_key`` beats it (``promptwire serve --api-key``)."""
    from promptwire.server._app import create_app
    from promptwire.server.observability import Observability

    settings = settings or PromptwireSettings()
    return create_app(
        engine,
        api_key=api_key if api_key is not None else settings.api_key,
        limits=settings,
        allowed_hosts=allowed_hosts,
        observability=Observability.from_settings(settings),
        console=settings.console,
    )


__all__ = ["app_from_settings"]
