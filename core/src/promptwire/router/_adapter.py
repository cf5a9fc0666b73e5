"""The ``router`` backend's client adapter: builds one member per endpoint, each reached
through its own backend's adapter (the prompt protocol, ``openai``, any other), and a
``RouterClient`` over them."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic_settings import BaseSettings

from promptwire.client import ClientConfig, EndpointClient, check_header_secret, parse_endpoint_url
from promptwire.client.wire import PROMPT_PROTOCOL, WireFormat
from promptwire.errors import ConfigurationError
from promptwire.plugins.backends import ClientAdapter
from promptwire.router._members import Member, Pool
from promptwire.router._router_client import RouterClient
from promptwire.router._settings import BACKEND_NAME, RouterEndpoint, RouterSettings
from promptwire.settings import ConnectionSettings

#: The most members a router takes. Each costs little (about 20 KiB, and no SSL context of its
#: own), but a call that finds every member down tries each in turn, and the strategies look at
#: every member on each pick: past a thousand, a router of routers is the better design.
MAX_MEMBERS = 1000

_NO_SETTINGS = BaseSettings()
"""The settings of a member reached by the prompt protocol (none), made once for all."""


class RouterAdapter(ClientAdapter[RouterSettings]):
    def wire_format(self, settings: RouterSettings) -> WireFormat:
        """Checks the members when the model is made (each member has its own wire format)."""
        check_members(settings)
        return PROMPT_PROTOCOL

    def endpoint_client(
        self,
        settings: RouterSettings,
        config: ClientConfig,
        *,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> EndpointClient:
        members = [
            _member(endpoint, config, http_client, http_async_client)
            for endpoint in check_members(settings)
        ]
        pool = Pool(
            members,
            strategy=settings.strategy,
            failures=settings.failures,
            cooldown=settings.cooldown,
            attempt_timeout=settings.attempt_timeout,
            max_retries=config.max_retries,
            retry_unsafe=config.retry_unsafe,
        )
        return RouterClient(pool, members[0].client)


def check_members(settings: RouterSettings) -> list[RouterEndpoint]:
    """The members, each with a valid URL, secrets that fit a header and a known backend."""
    if not settings.endpoints:
        raise ConfigurationError(
            "the router backend has no endpoints: set PROMPTWIRE_ROUTER__ENDPOINTS to a JSON list "
            'of URLs or of objects with "url"'
        )
    if len(settings.endpoints) > MAX_MEMBERS:
        raise ConfigurationError(
            f"the router backend has {len(settings.endpoints)} endpoints; it takes at most "
            f"{MAX_MEMBERS}"
        )
    for endpoint in settings.endpoints:
        parse_endpoint_url(endpoint.url)
        for name in ("api_key", "modal_key", "modal_secret"):
            if (secret := getattr(endpoint, name)) is not None:
                check_header_secret(f"router endpoint {name}", secret.get_secret_value())
        if endpoint.backend == BACKEND_NAME:
            raise ConfigurationError("a router endpoint cannot itself use the router backend")
        _member_backend(endpoint)
    return settings.endpoints


def endpoint_label(url: str) -> str:
    """A member's URL as logs, metadata and errors show it: no query, fragment or credentials."""
    return str(parse_endpoint_url(url).copy_with(query=None, fragment=None))


def _member_backend(endpoint: RouterEndpoint) -> tuple[ClientAdapter[Any], BaseSettings]:
    if endpoint.backend is None:
        if endpoint.settings:
            raise ConfigurationError(
                f"router endpoint {endpoint_label(endpoint.url)} has settings but no backend"
            )
        return ClientAdapter(), _NO_SETTINGS
    from promptwire.plugins import get_backend

    backend = get_backend(endpoint.backend).backend
    return backend.client, backend.load_settings(**endpoint.settings)


def _member(
    endpoint: RouterEndpoint,
    config: ClientConfig,
    http_client: httpx.Client | None,
    http_async_client: httpx.AsyncClient | None,
) -> Member:
    adapter, settings = _member_backend(endpoint)
    connection: dict[str, Any] = {
        name: getattr(config, name) for name in ConnectionSettings.model_fields
    }
    for name in ("api_key", "modal_key", "modal_secret"):  # its own credentials, else the model's
        if (secret := getattr(endpoint, name)) is not None:
            connection[name] = secret
    connection.update(endpoint_url=endpoint.url, max_retries=0)  # the router moves on instead
    member_config = ClientConfig(
        **connection, headers=adapter.headers(settings), wire=adapter.wire_format(settings)
    )
    client = adapter.endpoint_client(
        settings, member_config, http_client=http_client, http_async_client=http_async_client
    )
    return Member(
        endpoint_label(endpoint.url), client, adapter.default_params(settings), endpoint.weight
    )
