"""Settings from arguments, the environment (``PROMPTWIRE_*``) and ``.env``, in that order.

A backend's own settings nest under its name: ``PROMPTWIRE_MODAL_EXLLAMA__CACHE_MODE=Q4`` sets
``cache_mode`` of the ``modal_exllama`` backend (see ``backend_settings_config``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from promptwire.errors import ConfigurationError
from promptwire.protocol import MAX_BODY_BYTES

S = TypeVar("S", bound=BaseSettings)

ENV_PREFIX = "PROMPTWIRE_"
DEFAULT_ENDPOINT_URL = "http://127.0.0.1:8000/"
DEFAULT_SERVE_BACKEND = "modal_dummy"
#: The default bound on a reply's decoded size (a whole reply, or one event of a stream).
MAX_REPLY_BYTES = 32 << 20
#: How ``None`` is written in the environment, for settings classes that read it back
#: (``env_parse_none_str=NONE_VALUE``).
NONE_VALUE = "null"

# The client settings' types: checked the same way whether a value comes from an argument of
# ``PromptwireLLM``/``ChatPromptwire``, the environment or ``.env``.
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Retries = Annotated[int, Field(ge=0, le=20)]
Concurrency = Annotated[int, Field(ge=1, le=4096)]
ReplyBytes = Annotated[int, Field(ge=1024, le=1 << 31)]
# The server's limits on its clients (``promptwire serve``; the app-level ones also on Modal).
ServerSeconds = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 512
#: A request head (request line and headers) at most, in bytes, and its headers at most: h11's
#: own bound and Node's; nginx's is 32 KiB, Apache's 100 headers of 8 KiB each.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_SHUTDOWN_GRACE = 5.0
#: ``promptwire serve``'s HTTP/1.1 parser: ``auto`` is httptools where installed, else h11.
HttpParser = Literal["auto", "h11", "httptools"]


class ConnectionSettings(BaseModel):
    """How a client reaches an endpoint: declared here once, read from the environment by
    ``PromptwireSettings``, taken as arguments by ``PromptwireLLM`` and ``ChatPromptwire``, and
    handed whole to the HTTP client (``promptwire.client.ClientConfig``)."""

    # A validation error shows no input: the input holds the credentials (a model made with
    # ``api_key`` and a faulty other argument echoed the key in its error).
    model_config = ConfigDict(hide_input_in_errors=True)

    endpoint_url: str = Field(default=DEFAULT_ENDPOINT_URL, description="The prompt endpoint.")
    api_key: SecretStr | None = Field(default=None, description="Bearer token (client and server).")
    modal_key: SecretStr | None = Field(
        default=None, description="Modal proxy-auth key, sent as ``Modal-Key``."
    )
    modal_secret: SecretStr | None = Field(
        default=None, description="Modal proxy-auth secret, sent as ``Modal-Secret``."
    )
    timeout: Seconds = Field(
        default=600.0,
        description="Seconds for a whole reply, or between two pieces of a stream. Generous "
        "because a Modal cold start can take minutes.",
    )
    connect_timeout: Seconds = Field(default=10.0, description="Seconds to open a connection.")
    max_retries: Retries = Field(
        default=2, description="Retries of a request the server cannot have run."
    )
    retry_unsafe: bool = Field(
        default=False,
        description="Also retry failures after which the server may have run the request "
        "(502, 504, read timeouts, dropped connections).",
    )
    max_concurrency: Concurrency = Field(
        default=16, description="Requests of one batch in flight at once."
    )
    max_reply_bytes: ReplyBytes = Field(
        default=MAX_REPLY_BYTES,
        description="The most bytes of a whole reply, or of one event of a stream, once decoded.",
    )

    @field_validator("api_key", "modal_key", "modal_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """An empty secret is none, for the client as for the server (``PROMPTWIRE_API_KEY=``
        in a shared ``.env`` serves without auth; the clients refused to be made)."""
        empty = value == "" or (isinstance(value, SecretStr) and not value.get_secret_value())
        return None if empty else value


class ClientSettings(ConnectionSettings):
    """What a LangChain model reads from the environment: the connection and the backend."""

    backend: str | None = Field(
        default=None, description="Backend name; picks the client adapter and the served engine."
    )


class _SendTimeout(BaseModel):
    """The one limit both the app and ``promptwire serve``'s connections hold."""

    send_timeout: ServerSeconds | None = Field(
        default=DEFAULT_SEND_TIMEOUT,
        description="Server: seconds a client may read nothing of an answer or a stream before "
        "its connection is dropped and its generation cancelled; None (only as an argument): "
        "no deadline.",
    )


class ServerLimits(_SendTimeout):
    """What a served app bounds for its clients, wherever it runs: the single declaration of
    these limits. ``PromptwireSettings`` reads them from ``PROMPTWIRE_*``, ``create_app`` takes
    them (``limits=``), ``promptwire serve`` passes its settings, and every Modal app hands the
    deploying machine's to its containers (``server_environment``), which build their app with
    them."""

    max_body_bytes: int = Field(
        default=MAX_BODY_BYTES,
        ge=1024,
        description="Server: the most bytes of a request body (413 beyond).",
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Server: requests served at once before answering 503."
    )
    body_timeout: ServerSeconds | None = Field(
        default=DEFAULT_BODY_TIMEOUT,
        description="Server: seconds a request has to send its whole body (408 after); None "
        "(only as an argument) sets no deadline.",
    )
    shutdown_grace: float = Field(
        default=DEFAULT_SHUTDOWN_GRACE,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Server: seconds running requests and streams get to finish on SIGTERM; "
        "then a stream ends with an error event and a whole reply is answered 503.",
    )


#: The fields of ``ServerLimits``, in the order they are declared.
SERVER_LIMIT_FIELDS = tuple(ServerLimits.model_fields)


class ConnectionLimits(_SendTimeout):
    """What a connection may do before ``promptwire serve`` closes it: the single declaration of
    these limits (``promptwire.server._connections`` holds each connection to them).
    ``PromptwireSettings`` reads them from ``PROMPTWIRE_*``, and ``promptwire serve`` passes its
    settings' (``connection_limits``). On Modal the platform's proxy holds the connections."""

    header_timeout: ServerSeconds = Field(
        default=DEFAULT_HEADER_TIMEOUT,
        description="Server: seconds a connection has to send a request's head (its request line "
        "and headers), from when it opens or its last answer ends; then it is closed (408).",
    )
    max_header_bytes: int = Field(
        default=DEFAULT_MAX_HEADER_BYTES,
        ge=1024,
        le=1 << 20,
        description="Server: the most bytes of a request's head (request line and headers); "
        "beyond, a JSON 431 and the connection is closed.",
    )
    max_headers: int = Field(
        default=DEFAULT_MAX_HEADERS,
        ge=16,
        le=10_000,
        description="Server: the most header lines in a request (431 and closed beyond).",
    )
    keep_alive_timeout: int = Field(
        default=DEFAULT_KEEP_ALIVE_TIMEOUT,
        ge=1,
        le=3600,
        description="Server: seconds an idle kept-alive connection stays open.",
    )
    max_connections: int = Field(
        default=DEFAULT_MAX_CONNECTIONS,
        ge=1,
        le=1_000_000,
        description="Server: open connections at most; one more is answered 503 and closed.",
    )

    def head_over(self, headers: int, size: int) -> bool:
        """A request head of ``headers`` lines and ``size`` bytes is over the limits."""
        return headers > self.max_headers or size > self.max_header_bytes


#: The fields of ``ConnectionLimits``, in the order they are declared.
CONNECTION_LIMIT_FIELDS = tuple(ConnectionLimits.model_fields)


def connection_limits(settings: ConnectionLimits) -> ConnectionLimits:
    """Just the connection limits of ``settings`` (``PromptwireSettings`` is one)."""
    return ConnectionLimits.model_validate(
        settings.model_dump(include=set(CONNECTION_LIMIT_FIELDS))
    )


class PromptwireSettings(BaseSettings, ClientSettings, ServerLimits, ConnectionLimits):
    """Everything the client, the server and the CLI read from the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    engine_process: bool | None = Field(
        default=None,
        description="Server: run the engine in a process of its own, supervised and restarted "
        "if it dies (a native crash then fails only the requests in flight, and no engine step "
        "stalls the HTTP side); unset: the backend's choice (llamacpp: on).",
    )
    http: HttpParser = Field(
        default="auto",
        description="Server: promptwire serve's HTTP/1.1 parser, httptools (llhttp, in C) or h11 "
        "(pure Python), each with every connection guard; auto: httptools where installed.",
    )

    # What a server shows its operator (``promptwire.server.observability``).
    metrics: bool = Field(default=True, description="Server: serve GET /metrics (Prometheus).")
    metrics_public: bool = Field(
        default=False,
        description="Server: serve GET /metrics without the bearer token (like /health).",
    )
    request_log: bool = Field(
        default=True,
        description="Server: log one line per request (id, route, status, tokens, timings); "
        "uvicorn's own access log is then off.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Server: the request log's lines as plain text or JSON."
    )
    log_prompts: bool = Field(
        default=False,
        description="Server: put each request's prompt in its log line (off: prompts are never "
        "logged).",
    )
    opentelemetry: bool = Field(
        default=False,
        description="Server: trace requests with OpenTelemetry (needs the opentelemetry extra).",
    )
    console: bool = Field(
        default=True,
        description="Server: serve the console page at GET /console (try the model, watch the "
        "server; its data calls need the API key like every route); off: 404.",
    )


#: The settings above that shape what a server shows, handed to Modal containers as they are.
#: Not ``opentelemetry``: the first-party images do not install the instrumentation or an
#: exporter, so a container told to trace could not start (on Modal, traces need an image of
#: your own: see docs/OPERATIONS.md).
OBSERVABILITY_FIELDS = (
    "metrics",
    "metrics_public",
    "request_log",
    "log_format",
    "log_prompts",
    "console",
)


def observability_environment(settings: PromptwireSettings | None = None) -> dict[str, str | None]:
    """The observability settings of this machine as ``PROMPTWIRE_*`` variables, for a Modal
    function's ``env=``: its container then serves the way the deploying machine said."""
    settings = settings or PromptwireSettings()
    others = set(PromptwireSettings.model_fields) - set(OBSERVABILITY_FIELDS)
    return settings_environment(settings, exclude=others)


def limits_environment(settings: PromptwireSettings | None = None) -> dict[str, str | None]:
    """This machine's ``ServerLimits`` as ``PROMPTWIRE_*`` variables, for a Modal function's
    ``env=``: its container builds its app with the limits the deploying machine set. A limit
    left unset (None, such as ``max_in_flight``) is left out: the container's default is None
    too."""
    settings = settings or PromptwireSettings()
    unset = {name for name in SERVER_LIMIT_FIELDS if getattr(settings, name) is None}
    for name in unset:
        if PromptwireSettings.model_fields[name].default is not None:
            raise ValueError(
                f"{name} is None, which a container's environment cannot say: give it a value"
            )
    others = set(PromptwireSettings.model_fields) - set(SERVER_LIMIT_FIELDS)
    return settings_environment(settings, exclude=others | unset)


def server_environment(settings: PromptwireSettings | None = None) -> dict[str, str | None]:
    """What a Modal container's server needs of this machine's ``PROMPTWIRE_*`` settings: the
    server limits and the observability settings (never the API key: that comes from a Modal
    Secret). Read once, so both come from the same settings."""
    settings = settings or PromptwireSettings()
    return {**limits_environment(settings), **observability_environment(settings)}


def backend_settings_config(backend_name: str) -> SettingsConfigDict:
    """The settings config of a backend's own settings class (``PROMPTWIRE_<NAME>__<FIELD>``)."""
    return SettingsConfigDict(
        env_prefix=f"{ENV_PREFIX}{backend_name.upper()}__",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,  # a backend's settings may hold credentials
    )


def read_settings(settings_class: type[S], **overrides: Any) -> S:
    """``settings_class(**overrides)``, what it reads from the environment and ``.env``
    included, with a value pydantic-settings cannot read there as one ``ConfigurationError``:
    not JSON where a field needs JSON (its ``SettingsError``), or JSON nested too deeply for
    Python's parser (a ``RecursionError``, which nothing else turns into an error message)."""
    prefix = settings_class.model_config.get("env_prefix", "")
    try:
        return settings_class(**overrides)
    except SettingsError as exc:
        cause = exc.__cause__
        why = f": not JSON ({cause})" if isinstance(cause, json.JSONDecodeError) else ""
        raise ConfigurationError(f"invalid settings ({prefix}*): {exc}{why}") from None
    except RecursionError:
        raise ConfigurationError(
            f"invalid settings ({prefix}*): a value is JSON nested too deeply to read"
        ) from None


def settings_environment(
    settings: BaseSettings, *, exclude: Collection[str] = ()
) -> dict[str, str | None]:
    """``settings`` as the environment variables that build them again (``exclude`` left out).

    For a Modal function's ``env=``: its container imports the app module again and reads the
    settings from its own environment, which holds only what the function was given. A field set
    to None is written as the class's ``env_parse_none_str``; a class without one cannot have it.
    """
    config = settings.model_config
    prefix = config.get("env_prefix", "")
    none_value = config.get("env_parse_none_str")
    env: dict[str, str | None] = {}
    for name, value in settings.model_dump(mode="json", exclude=set(exclude)).items():
        key = f"{prefix}{name}".upper()
        if value is None:
            if none_value is None:
                raise ValueError(
                    f"{type(settings).__name__}.{name} is None, which its environment cannot "
                    "say: give the class env_parse_none_str"
                )
            env[key] = none_value
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        elif isinstance(value, dict | list):
            env[key] = json.dumps(value)
        else:
            env[key] = str(value)
    return env


__all__ = [
    "CONNECTION_LIMIT_FIELDS",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_ENDPOINT_URL",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_SERVE_BACKEND",
    "DEFAULT_SHUTDOWN_GRACE",
    "ENV_PREFIX",
    "MAX_BODY_BYTES",
    "MAX_REPLY_BYTES",
    "NONE_VALUE",
    "OBSERVABILITY_FIELDS",
    "SERVER_LIMIT_FIELDS",
    "ClientSettings",
    "ConnectionLimits",
    "ConnectionSettings",
    "HttpParser",
    "PromptwireSettings",
    "ServerLimits",
    "backend_settings_config",
    "connection_limits",
    "limits_environment",
    "observability_environment",
    "read_settings",
    "server_environment",
    "settings_environment",
]
