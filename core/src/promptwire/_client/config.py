"""What an endpoint client is told, checked once when it is made."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

from promptwire._client.reply_body import ACCEPT_ENCODING
from promptwire.errors import ConfigurationError
from promptwire.wire import PROMPT_PROTOCOL, WireFormat

#: The default bound on a reply's decoded size (a whole reply, or one event of a stream).
MAX_REPLY_BYTES = 32 << 20
USER_AGENT = "promptwire"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: SecretStr | None = None
    secret_headers: Mapping[str, SecretStr] = field(default_factory=dict)
    """Headers whose values are secrets (Modal proxy auth); never shown in reprs or errors."""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    retry_unsafe: bool = False
    max_connections: int = 100
    max_reply_bytes: int = MAX_REPLY_BYTES
    """The most bytes of a whole reply, or of one event of a stream, once decoded."""
    wire: WireFormat = PROMPT_PROTOCOL
    """What requests and replies look like (the prompt protocol unless a backend says)."""

    def secrets(self) -> list[str]:
        """The secret values, checked for use in a header (every request carries them)."""
        given = [("api_key", self.api_key), *self.secret_headers.items()]
        for name, secret in given:
            if secret is not None:
                check_header_secret(name, secret.get_secret_value())
        return [s.get_secret_value() for _, s in given if s is not None]

    def request_headers(self) -> dict[str, str]:
        """The headers of every request: promptwire's, the backend's, then the credentials."""
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            **self.headers,
        }
        headers.update({k: v.get_secret_value() for k, v in self.secret_headers.items()})
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return headers

    def credential_headers(self) -> list[str]:
        """The headers that carry credentials: never sent to another origin."""
        return ["Authorization", *self.secret_headers]

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


_USERINFO = re.compile(r"//[^/?#]*@")
_HEADER_SECRET = re.compile(r"[\x21-\x7e]+")


def check_header_secret(name: str, value: str) -> None:
    """Refuse a secret that cannot travel in an HTTP header: empty, or with a space, a control
    character or a non-ASCII character (a token file read with its trailing newline). Naming the
    setting, never the value: httpx's own error would quote the whole header."""
    if not _HEADER_SECRET.fullmatch(value):
        raise ConfigurationError(
            f"{name} must be printable ASCII without spaces or control characters (is there a "
            "trailing newline?); its value is not shown"
        )


def parse_endpoint_url(url: str) -> httpx.URL:
    """The endpoint URL, checked once up front: http(s) with a host and no credentials in it
    (they would show in every error message, repr and serialized model), or a
    ``ConfigurationError``."""
    shown = _USERINFO.sub("//***@", url) if isinstance(url, str) else repr(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"endpoint URL {shown!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(
            f"endpoint URL {shown!r} must be an http:// or https:// URL with a host"
        )
    if parsed.userinfo:
        raise ConfigurationError(
            f"endpoint URL {shown!r} carries credentials; pass them as api_key (bearer) or "
            "modal_key/modal_secret instead"
        )
    return parsed
