"""A Modal app's bearer token: the Secret it comes from, and the container's check that it came.

The token never passes through an app's module: Modal puts the Secret's ``PROMPTWIRE_API_KEY``
in the container's environment, where the server reads it. A Secret named but lacking that key
would leave the endpoint open to anyone while its owner believes it guarded, so the deploy asks
Modal to refuse such a Secret, and the container refuses to serve without a key.
"""

from __future__ import annotations

import os

import modal

from promptwire.errors import ConfigurationError

API_KEY_VARIABLE = "PROMPTWIRE_API_KEY"


def api_key_secrets(secret_name: str | None) -> list[modal.Secret]:
    """A function's ``secrets`` for the token: the Secret ``secret_name`` (none: an open
    endpoint), which Modal refuses to deploy with unless it holds ``PROMPTWIRE_API_KEY``."""
    if not secret_name:
        return []
    return [modal.Secret.from_name(secret_name, required_keys=[API_KEY_VARIABLE])]


def require_api_key(secret_name: str | None) -> None:
    """In the container, before serving: a Secret was named, so a key must have come from it
    (an empty one means none, which would serve everyone)."""
    if secret_name and not os.environ.get(API_KEY_VARIABLE, "").strip():
        raise ConfigurationError(
            f"the Modal Secret {secret_name!r} gave no {API_KEY_VARIABLE} (or an empty one): "
            "not serving an endpoint open to anyone; put the key in that Secret, or set the "
            "backend's api_key_secret to an empty string for an open endpoint"
        )


__all__ = ["API_KEY_VARIABLE", "api_key_secrets", "require_api_key"]
