"""The CLI in fresh processes: demo, backends, invoke and serve."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.installed_plugin import run_cli
from tests.support.network import free_port
from tests.support.servers import refused_url, serve_asgi


def test_demo_runs_the_guide_chain_on_a_local_server() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert "Question: What NFL team won the Super Bowl" in result.stdout
    assert "Answer: hello world" in result.stdout


def test_demo_streams() -> None:
    result = run_cli("demo", "--stream")
    assert result.returncode == 0, result.stderr
    assert "Answer: hello world" in result.stdout


def test_invoke_prints_the_reply(echo_url: str) -> None:
    result = run_cli("invoke", "Identify yourself, bot!", "--url", echo_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Identify yourself, bot!"
    streamed = run_cli("invoke", "a b c", "--url", echo_url, "--stream")
    assert streamed.stdout.strip() == "a b c"


def test_invoke_reads_the_url_from_the_environment(dummy_url: str) -> None:
    result = run_cli("invoke", "hi", env={"PROMPTWIRE_ENDPOINT_URL": dummy_url})
    assert result.stdout.strip() == "hello world"


def test_invoke_error_is_one_clear_line_without_traceback() -> None:
    url = refused_url()
    result = run_cli("invoke", "hi", "--url", url, "--api-key", "cli-secret-99")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr and url in result.stderr
    assert "Traceback" not in result.stderr and "cli-secret-99" not in result.stderr + result.stdout


def test_invalid_options_are_one_line_naming_each_setting() -> None:
    result = run_cli(
        "invoke", "hi", "--url", refused_url(), "--timeout", "0", "--temperature", "-1"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid settings: timeout: Input should be greater than 0; "
        "temperature: Input should be greater than or equal to 0"
    ]


OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # writes the clipboard in many terminals
CLEAR = "\x1b[2J\x9b31m"


def test_invoke_escapes_terminal_control_sequences_from_the_model(echo_url: str) -> None:
    prompt = f"before {OSC52} {CLEAR} after"
    for extra in ([], ["--stream"]):
        result = run_cli("invoke", prompt, "--url", echo_url, *extra)
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
        assert "\x9b" not in result.stdout
        assert result.stdout.strip() == (
            "before \\x1b]52;c;cm0gLXJmIH4=\\x07 \\x1b[2J\\x9b31m after"
        )
    raw = run_cli("invoke", prompt, "--url", echo_url, "--raw")
    assert raw.stdout.strip() == prompt  # asked for


def test_invoke_escapes_control_sequences_in_error_text() -> None:
    async def hostile(request: Request) -> JSONResponse:
        message = f"overloaded {OSC52} retry"
        return JSONResponse({"error": {"type": "server_error", "message": message}}, 500)

    with serve_asgi(Starlette(routes=[Route("/", hostile, methods=["POST"])])) as server:
        result = run_cli("invoke", "hi", "--url", server.url)
    assert result.returncode == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "overloaded \\x1b]52;c;cm0gLXJmIH4=\\x07 retry" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


WITHOUT_HTTPTOOLS = "import sys; sys.modules['httptools'] = None; "
"""A prelude for ``_serve``: the interpreter then finds no httptools, as on PyPy."""


def _serve(port: int, env: dict[str, str], prelude: str = "") -> subprocess.Popen[str]:
    """``promptwire serve --port PORT`` in a child process with only ``env``'s PROMPTWIRE_*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWIRE_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            prelude + "from promptwire.cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=clean | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_health(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            _, stderr = process.communicate(timeout=30)
            raise AssertionError(f"server exited with {process.returncode}: {stderr[-3000:]}")
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def test_serve_hosts_the_app_with_env_settings() -> None:
    port = free_port()
    env = {"PROMPTWIRE_MODAL_DUMMY__REPLY": "served by the CLI", "PROMPTWIRE_API_KEY": "tok-55"}
    process = _serve(port, env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_health(process, url)
        assert httpx.post(url, json={"prompt": "p"}).status_code == 401
        reply = httpx.post(url, json={"prompt": "p"}, headers={"Authorization": "Bearer tok-55"})
        assert reply.json()["prompt"] == "served by the CLI"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "serving backend modal_dummy" in stderr and "tok-55" not in stderr
    assert "(bearer token required, httptools)" in " ".join(stderr.split())  # the default parser


def test_serve_falls_back_to_h11_without_httptools() -> None:
    port = free_port()
    process = _serve(port, {}, prelude=WITHOUT_HTTPTOOLS)
    try:
        _wait_for_health(process, f"http://127.0.0.1:{port}/")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "(no auth, h11)" in " ".join(stderr.split())


def test_serve_refuses_a_parser_that_is_not_installed_before_loading_anything() -> None:
    process = _serve(free_port(), {"PROMPTWIRE_HTTP": "httptools"}, prelude=WITHOUT_HTTPTOOLS)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "httptools is not installed" in " ".join(stderr.split())
    assert "Traceback" not in stderr and "serving backend" not in stderr


def test_serve_refuses_an_unknown_parser() -> None:
    process = _serve(free_port(), {"PROMPTWIRE_HTTP": "hyper"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "http" in stderr and "Traceback" not in stderr
