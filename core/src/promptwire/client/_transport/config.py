"""What an endpoint client is told, checked once when it is made."""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx
from pydantic import ConfigDict, Field

from promptwire.client._transport.reply_body import ACCEPT_ENCODING
from promptwire.client.wire import PROMPT_PROTOCOL, WireFormat
from promptwire.errors import ConfigurationError
from promptwire.settings import ConnectionSettings

USER_AGENT = "promptwire"
MODAL_KEY_HEADER = "Modal-Key"
MODAL_SECRET_HEADER = "Modal-Secret"  # noqa: S105 (a header name)
#: The least connections a client pools, whatever ``max_concurrency`` says: a model's batches
#: are bounded by it, but several batches (or chains) can share one model at once.
MIN_CONNECTIONS = 100


class ClientConfig(ConnectionSettings):
    """The connection settings (``promptwire.settings.ConnectionSettings``, declared there once)
    plus what the backend adds: its headers and its wire format."""

    # An error shows no input: the input holds the credentials.
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, hide_input_in_errors=True)

    headers: Mapping[str, str] = Field(default_factory=dict)
    """The backend's headers, sent with every request under promptwire's own."""
    wire: WireFormat = PROMPT_PROTOCOL
    """What requests and replies look like (the prompt protocol unless a backend says)."""

    @property
    def max_connections(self) -> int:
        return max(MIN_CONNECTIONS, self.max_concurrency)

    def secret_headers(self) -> dict[str, str]:
        """The Modal proxy-auth headers that are set: secrets, never shown in reprs or errors."""
        named = ((MODAL_KEY_HEADER, self.modal_key), (MODAL_SECRET_HEADER, self.modal_secret))
        return {header: value.get_secret_value() for header, value in named if value is not None}

    def secrets(self) -> list[str]:
        """The secret values, checked for use in a header (every request carries them)."""
        given = [
            ("api_key", self.api_key),
            ("modal_key", self.modal_key),
            ("modal_secret", self.modal_secret),
        ]
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
            **self.secret_headers(),
        }
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return headers

    def credential_headers(self) -> list[str]:
        """The headers that carry credentials: never sent to another origin."""
        return ["Authorization", MODAL_KEY_HEADER, MODAL_SECRET_HEADER]

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
    # httpx takes both, and the call then fails as if the server were down or unknown.
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigurationError(f"endpoint URL {shown!r} has no valid port (1 to 65535)")
    if "%" in parsed.host:  # a space or another character no host name has, percent-encoded
        raise ConfigurationError(f"endpoint URL {shown!r} has an invalid host name")
    return parsed
