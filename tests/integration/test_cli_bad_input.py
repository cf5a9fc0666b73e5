"""The CLI refuses bad input with one clear line and exit status 1, before any model loads.

Before these fixes: ``serve --port 70000`` printed that port and bound 4464 (70000 mod 65536);
``--port 0`` printed ``:0/`` while uvicorn bound a random port; ``--host ::1`` printed
``http://::1:8000/``; ``--host '[/bold]'`` ended in rich's ``MarkupError``; ``--log-level bogus``
in a ``ValueError`` traceback; ``status --timeout nan`` in anyio's "deadline must not be NaN"
(``0`` and ``-1`` were taken, "no answer within -1 s") and a router's status said "no answer
within 3.68877 s"; ``new-backend router`` (or ``openai``...) wrote a project that replaced the
installed plugin; ``demo --backend modal_exllama`` said "pass --model-dir", which ``demo`` had not;
and a port in use gave uvicorn's ``[Errno 98]`` and INFO lines, exit status 3, after the engine
was loaded.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from promptwire import Backend, ConfigurationError, hookimpl
from promptwire.cli import _commands, app
from promptwire.cli._new_backend import write_project
from promptwire.cli._status import read_status, read_statuses, seconds
from promptwire.errors import EndpointTimeoutError
from promptwire.plugins import default_registry
from typer.testing import CliRunner, Result

from tests.support.installed_plugin import run_cli
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY


def refused(result: Result, *expected: str) -> str:
    """The command failed with a ``ConfigurationError`` (``main`` prints it as one line, exit 1)
    saying each of ``expected``."""
    assert isinstance(result.exception, ConfigurationError), result.output
    message = str(result.exception)
    assert "\n" not in message
    for text in expected:
        assert text in message
    return message


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """``serve`` without serving: what it would pass uvicorn."""
    import promptwire.server

    calls: dict[str, Any] = {}

    def run_server(app: object, **options: Any) -> None:
        calls.update(options)

    monkeypatch.setattr(promptwire.server, "run_server", run_server)
    yield calls


def serve(*args: str) -> Result:
    return CliRunner().invoke(app, ["serve", "--backend", "modal_dummy", *args])


# -- 1. and 2. the port ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_a_port_out_of_range_is_refused(served: dict[str, Any], port: str) -> None:
    refused(serve("--port", port), f"invalid --port {port}", "65535")
    assert not served


def test_port_0_is_a_free_port_chosen_and_printed(served: dict[str, Any]) -> None:
    result = serve("--port", "0")
    assert result.exit_code == 0, result.output
    port = served["port"]
    assert port != 0
    assert f"on http://127.0.0.1:{port}/ " in result.output
    assert f"http://127.0.0.1:{port}/console" in result.output
    with socket.socket() as sock:  # free: serve holds nothing once uvicorn is to bind it
        sock.bind(("127.0.0.1", port))


# -- 3. IPv6 -------------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_ipv6_host_is_bracketed_in_urls(served: dict[str, Any], host: str) -> None:
    result = serve("--host", host, "--port", "0")
    assert result.exit_code == 0, result.output
    port = served["port"]
    assert served["host"] == "::1"
    assert f"on http://[::1]:{port}/ " in result.output
    assert f"http://[::1]:{port}/console" in result.output


# -- 4. markup -----------------------------------------------------------------------------------


def test_a_host_like_markup_is_an_error_line_not_a_markup_error(served: dict[str, Any]) -> None:
    refused(serve("--host", "[/bold]", "--port", "0"), "cannot serve on [/bold]")


def test_what_serve_prints_is_shown_not_read_as_markup(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host that binds cannot hold markup; the lines printed must not depend on it.
    monkeypatch.setattr(_commands, "_bindable_port", lambda host, port: 8000)
    result = serve("--host", "[/bold]")
    assert result.exit_code == 0, result.output
    assert "WARNING: serving on [/bold] with no API key" in " ".join(result.output.split())
    assert "on http://[/bold]:8000/ " in result.output


@hookimpl
def _register_markup(register: Any) -> None:
    register(Backend(name="markup_shown", description="a [/bold] description [red]"))


def test_backends_shows_a_plugins_text_as_it_is() -> None:
    registry = default_registry()
    plugin = ModuleType("markup_plugin")
    plugin.register_backends = _register_markup  # type: ignore[attr-defined]
    registry.register(plugin, "markup_plugin", distribution="[/dist]")
    try:
        result = CliRunner().invoke(app, ["backends"], env={"COLUMNS": "300"})
    finally:
        registry.unregister("markup_plugin")
    assert result.exit_code == 0, result.output
    assert "a [/bold] description [red]" in result.stdout
    assert "[/dist]" in result.stdout


# -- 5. the log level ----------------------------------------------------------------------------


def test_a_bogus_log_level_is_refused(served: dict[str, Any]) -> None:
    refused(serve("--log-level", "bogus"), "invalid --log-level 'bogus'", "debug", "trace")
    assert not served


def test_a_log_level_in_capitals_is_uvicorns_in_lowercase(served: dict[str, Any]) -> None:
    result = serve("--log-level", "WARNING", "--port", "0")
    assert result.exit_code == 0, result.output
    assert served["log_level"] == "warning"


# -- 6. status's timeout ----------------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-1"])
def test_status_needs_a_positive_finite_timeout(timeout: str) -> None:
    result = CliRunner().invoke(app, ["status", "http://127.0.0.1:9/", "--timeout", timeout])
    refused(result, f"invalid --timeout {timeout}", "positive")


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3.68877, "3.69"), (10.0, "10"), (0.25, "0.25"), (600.0, "600"), (3600.0, "3600")],
)
def test_seconds_are_shown_with_few_digits(value: float, shown: str) -> None:
    assert seconds(value) == shown


@pytest.fixture
def silent() -> Iterator[str]:
    """An endpoint that takes connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"


def test_a_members_timeout_is_said_with_few_digits(silent: str) -> None:
    # A member gets what is left of --timeout (here 2.3337 s, less the client's setting up).
    # On a loaded machine the setting up can take over a second: "0.987" is three digits too.
    [status] = read_statuses([(silent, {})], timeout=2.3337)
    said = re.match(r"no answer within ([0-9.]+) s ", status.health)
    assert said is not None, status.health
    assert len(said[1].replace(".", "").lstrip("0")) <= 3, status.health
    with pytest.raises(EndpointTimeoutError, match=r"no answer within 0\.3 s"):
        read_status(silent, timeout=0.3)


# -- 7. new-backend names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["router", "openai", "reverse", "modal_dummy", "llamacpp"])
def test_new_backend_refuses_an_installed_backends_name(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(app, ["new-backend", name, "--directory", str(tmp_path)])
    refused(result, f"cannot start a backend named {name!r}", "already")
    assert not any(tmp_path.iterdir())


def test_new_backend_refuses_a_package_importable_already(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "promptwire_taken_here").mkdir(parents=True)
    (site / "promptwire_taken_here" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigurationError, match="promptwire_taken_here is importable already"):
        write_project("taken_here", out)
    assert not any(out.iterdir())


def test_new_backend_refuses_an_installed_distributions_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    info = site / "promptwire_dist_only-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: promptwire-dist-only\n")
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigurationError, match="promptwire-dist-only is installed already"):
        write_project("dist_only", out)
    assert not any(out.iterdir())


# -- 8. demo --model-dir ---------------------------------------------------------------------


def test_demo_takes_the_model_dir_the_exllama_message_asks_for(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--backend", "modal_exllama", "--model-dir", str(tmp_path)]
    )
    refused(result, f"{tmp_path} is not a model directory")


# -- 9. a port in use ----------------------------------------------------------------------------


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_port_in_use_is_said_before_the_engine_loads(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch, taken: int
) -> None:
    def build_app(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine was loaded")

    monkeypatch.setattr(_commands, "build_app", build_app)
    refused(serve("--port", str(taken)), f"port {taken} on 127.0.0.1 is in use")
    assert not served


def test_a_port_in_use_is_one_line_and_exit_status_1(taken: int) -> None:
    result = run_cli("serve", "--backend", "modal_dummy", "--port", str(taken), timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip() == f"error: port {taken} on 127.0.0.1 is in use"
