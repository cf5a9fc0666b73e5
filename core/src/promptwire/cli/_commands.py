"""The ``promptwire`` command: serve a backend, call an endpoint, list backends, run the demo,
start a new backend.

Plugins add commands through the ``register_commands`` hook. Errors are printed as one clear line
(never a traceback, never a secret) and exit with status 1.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import math
import re
import socket
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from promptwire.errors import ConfigurationError, PromptwireError
from promptwire.settings import (
    DEFAULT_SERVE_BACKEND,
    ConnectionSettings,
    PromptwireSettings,
    read_settings,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import SecretStr

    from promptwire.engine import Engine
    from promptwire.langchain.llm import PromptwireLLM

app = typer.Typer(
    name="promptwire",
    help="Serve your own LLM behind a prompt endpoint and call it from LangChain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def out() -> Console:
    """A console on stdout, made when used: it reads the terminal's width (and COLUMNS) now."""
    return Console()


def err() -> Console:
    """A console on stderr, made when used."""
    return Console(stderr=True)


# The LangChain Modal guide's chain, reproduced by ``promptwire demo``.
DEFAULT_TIMEOUT: float = ConnectionSettings.model_fields["timeout"].default

DEMO_TEMPLATE = """Question: {question}

Answer: Let's think step by step."""
DEMO_QUESTION = "What NFL team won the Super Bowl in the year Justin Beiber was born?"


#: uvicorn's log levels, the choices of ``serve --log-level``.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
MAX_PORT = 65535
#: Tries at a free port for ``--port 0`` on a host with several addresses (``localhost``).
FREE_PORT_TRIES = 8


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(
    backend_name: str,
    *,
    api_key: str | None,
    settings: PromptwireSettings,
    overrides: dict[str, Any] | None = None,
    allowed_hosts: Collection[str] | None = None,
) -> FastAPI:
    """The protocol app serving ``backend_name``'s engine (for ``serve`` and ``demo``)."""
    from promptwire.plugins import get_backend
    from promptwire.server import app_from_settings

    backend = get_backend(backend_name).backend
    if backend.create_engine is None:
        raise PromptwireError(f"backend {backend_name!r} has no engine to serve locally")
    backend_settings = backend.load_settings(**(overrides or {}))
    engine: Engine[Any]
    if backend.engine_process if settings.engine_process is None else settings.engine_process:
        from promptwire.engine.process import ProcessEngine

        engine = ProcessEngine(backend.create_engine, backend_settings)
    else:
        engine = backend.create_engine(backend_settings)
    return app_from_settings(engine, settings, api_key=api_key or "", allowed_hosts=allowed_hosts)


@app.command()
def serve(
    backend: Annotated[
        str | None,
        typer.Option(help="Backend to serve \\[default: PROMPTWIRE_BACKEND or modal_dummy]"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind \\[default: 127.0.0.1]")] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port, 0 to 65535 (0: any free one) \\[default: 8000]"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require this bearer token \\[default: PROMPTWIRE_API_KEY]", show_default=False
        ),
    ] = None,
    model_dir: Annotated[
        str | None, typer.Option(help="Model directory, for backends that load one")
    ] = None,
    log_level: Annotated[
        str, typer.Option(help=f"uvicorn log level: {', '.join(LOG_LEVELS)}")
    ] = "info",
) -> None:
    """Serve a backend's engine over the prompt endpoint protocol on this machine.

    Slow or absent clients and large heads are bounded (PROMPTWIRE_HEADER_TIMEOUT,
    _BODY_TIMEOUT, _KEEP_ALIVE_TIMEOUT, _SEND_TIMEOUT, _MAX_CONNECTIONS, _MAX_HEADER_BYTES,
    _MAX_HEADERS, _SHUTDOWN_GRACE) on either HTTP
    parser (PROMPTWIRE_HTTP: auto, httptools or h11); on a loopback address only loopback host
    names are answered."""
    from promptwire._logs import set_level
    from promptwire.server import loopback_host_names, run_server
    from promptwire.server._connections import resolve_parser
    from promptwire.settings import connection_limits

    level = log_level.lower()
    if level not in LOG_LEVELS:
        raise ConfigurationError(
            f"invalid --log-level {log_level!r}: use one of {', '.join(LOG_LEVELS)}"
        )
    if port is not None and not 0 <= port <= MAX_PORT:
        raise ConfigurationError(
            f"invalid --port {port}: use 1 to {MAX_PORT}, or 0 for any free port"
        )
    set_level(level)  # the request log and promptwire's other lines follow --log-level
    settings = read_settings(PromptwireSettings)
    http = resolve_parser(settings.http)  # before a model loads: a missing parser fails at once
    name = backend or settings.backend or DEFAULT_SERVE_BACKEND
    host = _unbracketed(host or settings.host)
    # Before a model loads: a port in use (or not ours to bind) fails at once, in one line; and
    # --port 0 becomes the free port chosen here, so the URLs printed are the ones served.
    port = _bindable_port(host, settings.port if port is None else port)
    token = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    overrides = {"model_dir": model_dir} if model_dir else None
    if not token and not _is_loopback(host):
        err().print(
            f"[bold red]WARNING: serving on {escape(host)} with no API key: anyone who can "
            "reach this port can use the model. Set PROMPTWIRE_API_KEY or pass --api-key.[/]"
        )
    fastapi_app = build_app(
        name,
        api_key=token,
        settings=settings,
        overrides=overrides,
        allowed_hosts=loopback_host_names(host),
    )
    limits = connection_limits(settings)
    auth = "bearer token required" if token else "no auth"
    url = _url(host, port)
    err().print(
        f"promptwire: serving backend [bold]{escape(name)}[/] on {escape(url)} ({auth}, {http})",
        soft_wrap=True,  # one line in a log, however narrow the terminal
    )
    if settings.console:
        err().print(f"promptwire: the console, in a browser: {escape(url)}console", soft_wrap=True)
    run_server(fastapi_app, host=host, port=port, log_level=level, limits=limits, http=http)


def _unbracketed(host: str) -> str:
    """``host`` as bound: ``[::1]`` (as in a URL) is the address ``::1``."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") and ":" in host else host


def _url(host: str, port: int) -> str:
    """The base URL of a server on ``host``: an IPv6 address in brackets (``http://[::1]:80/``)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _bindable_port(host: str, port: int) -> int:
    """``port`` once it is known that ``serve`` can bind it on every address of ``host`` (as
    uvicorn will: each with SO_REUSEADDR, IPv6 ones v6-only); for 0, a free port chosen now.
    Raises ``ConfigurationError`` (one line) for a port in use, an address not of this machine,
    a privileged port, a host that does not resolve."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise ConfigurationError(f"cannot serve on {host}: {why}") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    for _ in range(FREE_PORT_TRIES if port == 0 else 1):
        chosen, sockets = port, []
        try:
            for family, address in addresses:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], chosen, *address[2:]))
                chosen = chosen or sock.getsockname()[1]
            return chosen
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            if in_use and port == 0:
                continue  # the port chosen on one address is taken on another: choose again
            shown = chosen or port
            if in_use:
                raise ConfigurationError(f"port {shown} on {host} is in use") from None
            why = exc.strerror or type(exc).__name__
            raise ConfigurationError(f"cannot serve on port {shown} of {host}: {why}") from None
        finally:
            for sock in sockets:
                sock.close()
    raise ConfigurationError(f"found no port free on every address of {host}")


def _llm(
    url: str | None,
    backend: str | None,
    api_key: str | None,
    timeout: float | None,
    params: dict[str, Any],
) -> PromptwireLLM:
    from promptwire.langchain.llm import PromptwireLLM

    options: dict[str, Any] = dict(params)
    for key, value in (
        ("endpoint_url", url),
        ("backend", backend),
        ("api_key", api_key),
        ("timeout", timeout),
    ):
        if value is not None:
            options[key] = value
    return PromptwireLLM(**options)


@app.command()
def invoke(
    prompt: Annotated[str, typer.Argument(help="The prompt to send")],
    url: Annotated[
        str | None, typer.Option(help="Endpoint URL \\[default: PROMPTWIRE_ENDPOINT_URL]")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="Backend \\[default: PROMPTWIRE_BACKEND]")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Bearer token \\[default: PROMPTWIRE_API_KEY]", show_default=False),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the reply as it is generated")
    ] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help=f"Seconds to wait \\[default: PROMPTWIRE_TIMEOUT, else {DEFAULT_TIMEOUT:g}]"
        ),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", help="Print the reply as it is, terminal control characters included"
        ),
    ] = False,
) -> None:
    """Send one prompt to an endpoint and print the reply.

    Control characters in the reply (which could move the cursor, retitle the window or write the
    clipboard) are shown escaped, as ``\\x1b``, unless ``--raw``.
    """
    params = {
        k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None
    }
    llm = _llm(url, backend, api_key, timeout, params)
    shown = writable if raw else visible
    _replace_unencodable(sys.stdout)
    if stream:
        for piece in llm.stream(prompt):
            sys.stdout.write(shown(piece))
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        sys.stdout.write(shown(llm.invoke(prompt)) + "\n")


@app.command()
def status(
    url: Annotated[
        str | None,
        typer.Argument(
            help="Endpoint URL \\[default: PROMPTWIRE_ENDPOINT_URL]", show_default=False
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Bearer token \\[default: PROMPTWIRE_API_KEY]", show_default=False),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds the whole status may take, however slow the answers (> 0)"),
    ] = 10.0,
) -> None:
    """Summarize what an endpoint is doing, from its /health and /metrics: model, version,
    requests in flight, cache use, tokens per second, cold start. Exit status 1 unless healthy.
    With PROMPTWIRE_BACKEND=router and no URL: each member of the router, and exit status 1
    unless one of them is healthy."""
    from promptwire.cli._status import read_status, read_statuses, seconds

    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(
            f"invalid --timeout {seconds(timeout)}: give a positive number of seconds"
        )
    settings = read_settings(PromptwireSettings)
    token = api_key or _secret(settings.api_key)
    if url is None and settings.backend == "router":
        from promptwire.router import RouterSettings
        from promptwire.router._adapter import check_members

        router = read_settings(RouterSettings)
        # As the model checks them: URLs without credentials, at most MAX_MEMBERS.
        endpoints = check_members(router)
        members = read_statuses(
            [
                (
                    member.url,
                    _auth_headers(
                        _secret(member.api_key) or token,  # its own, else the command's
                        _secret(member.modal_key) or _secret(settings.modal_key),
                        _secret(member.modal_secret) or _secret(settings.modal_secret),
                    ),
                )
                for member in endpoints
            ],
            timeout=timeout,
        )
        ready = sum(member.ready for member in members)
        _print_rows(
            [
                (
                    "router",
                    f"{len(members)} member{'s' if len(members) > 1 else ''} ({router.strategy}): "
                    f"{ready} ready",
                )
            ]
        )
        for member in members:
            out().print()
            _print_rows(member.lines())
        if not ready:
            raise typer.Exit(1)
        return
    headers = _auth_headers(token, _secret(settings.modal_key), _secret(settings.modal_secret))
    found = read_status(url or settings.endpoint_url, headers=headers, timeout=timeout)
    _print_rows(found.lines())
    if not found.ready:
        raise typer.Exit(1)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _auth_headers(
    token: str | None, modal_key: str | None, modal_secret: str | None
) -> dict[str, str]:
    """A bearer token and Modal's proxy auth (both key and secret), where given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if modal_key and modal_secret:
        headers["Modal-Key"] = modal_key
        headers["Modal-Secret"] = modal_secret
    return headers


def _print_rows(rows: list[tuple[str, str]]) -> None:
    for label, text in rows:  # one line each, however wide (a script may read them)
        out().print(f"{label:<12} {visible(text)}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def backends() -> None:
    """List installed backends (with the plugin that provides each) and plugins that failed."""
    from promptwire.plugins import get_backends, plugin_failures, plugin_notes

    table = Table(title="promptwire backends")
    for column in ("backend", "distribution", "version", "serve", "deploy", "description"):
        table.add_column(column)
    for name, registered in sorted(get_backends().items()):
        backend, plugin = registered.backend, registered.plugin
        table.add_row(  # a plugin's text is shown as it is, not read as markup
            *(
                escape(text)
                for text in (
                    name,
                    plugin.distribution or plugin.name,
                    plugin.version or "-",
                    "yes" if backend.create_engine else "no",
                    "yes" if backend.modal_app else "no",
                    backend.description,
                )
            )
        )
    out().print(table)
    for note in plugin_notes():
        err().print(f"[yellow]note: {escape(note)}[/]", highlight=False)
    for failure in plugin_failures():
        err().print(
            f"[red]plugin {escape(repr(failure.plugin.name))} "
            f"({escape(failure.plugin.distribution or 'unknown distribution')}) failed at "
            f"{failure.stage}: {escape(failure.error)}[/]",
            highlight=False,
        )


@app.command()
def demo(
    backend: Annotated[
        str, typer.Option(help="Backend to serve for the demo")
    ] = DEFAULT_SERVE_BACKEND,
    stream: Annotated[bool, typer.Option("--stream", help="Stream the answer")] = False,
    model_dir: Annotated[
        str | None, typer.Option(help="Model directory, for backends that load one")
    ] = None,
) -> None:
    """Run LangChain's Modal guide end to end: a local server, its template, its question."""
    from langchain_core.prompts import PromptTemplate

    from promptwire._logs import set_level
    from promptwire.server import BackgroundServer

    set_level("warning")  # the demo's output is the chain's, not the request log
    settings = read_settings(PromptwireSettings)
    overrides = {"model_dir": model_dir} if model_dir else None
    fastapi_app = build_app(backend, api_key=None, settings=settings, overrides=overrides)
    with BackgroundServer(fastapi_app) as server:
        err().print(f"promptwire: local {escape(backend)} server on {escape(server.url)}")
        llm = _llm(server.url, None, None, 60.0, {})
        chain = PromptTemplate.from_template(DEMO_TEMPLATE) | llm
        out().print(f"[bold]Question:[/] {DEMO_QUESTION}")
        if stream:
            out().print("[bold]Answer:[/] ", end="")
            for piece in chain.stream({"question": DEMO_QUESTION}):
                out().print(piece, end="", markup=False, highlight=False)
            out().print()
        else:
            answer = chain.invoke({"question": DEMO_QUESTION})
            out().print("[bold]Answer:[/] ", end="")
            out().print(answer, markup=False, highlight=False)
        llm.close()


@app.command()
def deploy(
    backend: Annotated[str, typer.Argument(help="Backend whose Modal app to deploy")],
    environment: Annotated[
        str | None, typer.Option(help="Modal environment \\[default: your Modal profile's]")
    ] = None,
    warm: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Containers Modal keeps running and ready (billed, no cold start) "
            "\\[default: the backend's MIN_CONTAINERS setting]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Deploy a backend's Modal app with your settings and print its endpoint URL."""
    from promptwire.modal.deploy import deploy_backend

    deployment = deploy_backend(backend, environment=environment, warm=warm)
    if deployment.url is None:
        err().print(
            f"promptwire: deployed {escape(deployment.app_name)}; find its URL at "
            f"{escape(deployment.dashboard_url or 'the Modal dashboard')}",
            highlight=False,
        )
        return
    err().print(
        f"promptwire: deployed [bold]{escape(deployment.app_name)}[/]. Point clients at it with:\n"
        f"  export PROMPTWIRE_BACKEND={escape(backend)}\n"
        f"  export PROMPTWIRE_ENDPOINT_URL={escape(deployment.url)}",
        highlight=False,
    )
    sys.stdout.write(deployment.url + "\n")


@app.command("new-backend")
def new_backend(
    name: Annotated[
        str, typer.Argument(help="The backend's name: lowercase letters, digits and '_'")
    ],
    directory: Annotated[
        Path, typer.Option(help="Where to create the project's folder \\[default: here]")
    ] = Path(),
) -> None:
    """Write a backend plugin project to start from: pyproject with its entry point, settings,
    an engine, the plugin module and a conformance-kit test that passes as written."""
    from promptwire.cli._new_backend import write_project

    project = write_project(name, directory)
    out().print(
        escape(f"wrote {project}: next, cd there, pip install -e '.[test]', pytest"), soft_wrap=True
    )


def _replace_unencodable(stream: Any) -> None:
    """A terminal whose encoding lacks a character of the reply (``LANG=C`` with an older
    Python, a Windows code page) shows ``?`` for it instead of ending in a traceback."""
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="replace")


def _add_plugin_commands() -> None:
    from promptwire.plugins import default_registry

    # A plugin whose register_commands raises is recorded (``promptwire backends`` lists it) and
    # logged; the other plugins' commands are still added.
    default_registry().add_commands(app)


def main() -> None:
    _add_plugin_commands()
    try:
        app()
    except (PromptwireError, ValidationError) as exc:
        # soft_wrap: one line however long, not cut at the terminal's width (or 80 columns)
        message = f"[bold red]error:[/] {escape(_one_line(exc))}"
        err().print(message, highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


# C0 and C1 control characters and DEL, but newline and tab: shown as escapes (CWE-150).
_CONTROLS = {
    code: f"\\x{code:02x}"
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
    if chr(code) not in "\n\t"
}


def visible(text: str) -> str:
    """``text`` with terminal control characters escaped, so a model's (or a server's) output
    cannot drive the terminal that shows it; and lone surrogates replaced (see ``writable``)."""
    return writable(text.translate(_CONTROLS))


_SURROGATES = re.compile("[\ud800-\udfff]")


def writable(text: str) -> str:
    """``text`` with each lone surrogate (valid in JSON as ``"\\ud800"``, in no encoding)
    replaced by U+FFFD, so that printing it cannot fail."""
    return _SURROGATES.sub("\ufffd", text)


def _one_line(exc: Exception) -> str:
    """The error as the one line the CLI promises (pydantic's own text spans several)."""
    if isinstance(exc, ValidationError):
        return "invalid settings: " + "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
    return visible(" ".join(str(exc).split()))
