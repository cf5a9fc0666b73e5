"""``promptwire status URL``: a short summary of a live endpoint, read from its ``/health`` and
``/metrics``."""

from __future__ import annotations

import json
import socket
import threading

import httpx
from promptwire import __version__
from promptwire.engine import Engine
from promptwire.protocol import PROTOCOL_VERSION
from promptwire.server import create_app

from tests.exllama.fakes import FakeRuntime, fake_engine
from tests.support.cli_server import promptwire_serve
from tests.support.installed_plugin import run_cli
from tests.support.servers import refused_url, serve_asgi
from tests.support.waiting import wait_until

TOKEN = "status-token-51"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rows(stdout: str) -> dict[str, str]:
    return {line[:12].strip(): line[13:] for line in stdout.splitlines() if line.strip()}


def test_status_summarizes_a_live_promptwire_serve() -> None:
    env = {
        "PROMPTWIRE_MODAL_DUMMY__ECHO": "true",
        "PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND": "50",
        "PROMPTWIRE_MODAL_DUMMY__FIRST_TOKEN_DELAY": "0.2",
    }
    with promptwire_serve("--api-key", TOKEN, env=env) as url:
        for _ in range(2):
            reply = httpx.post(url, json={"prompt": "a b c d e f", "stream": True}, headers=AUTH)
            assert reply.status_code == 200
        assert httpx.post(url, json={}, headers=AUTH).status_code == 422
        result = run_cli("status", url, "--api-key", TOKEN)
        refused = run_cli("status", url)  # no token: health only
    assert result.returncode == 0, result.stderr
    summary = rows(result.stdout)
    assert summary["endpoint"] == url
    assert summary["health"] == "ok"
    assert summary["model"] == "dummy"
    assert summary["version"] == f"promptwire {__version__} (protocol {PROTOCOL_VERSION})"
    assert summary["in flight"] == "0"
    assert summary["requests"] == "3 answered (4xx: 1, 5xx: 0)"
    assert summary["cache"] == "not reported by this engine"
    rate, _, tokens = summary["tokens/s"].partition("; ")
    # At most the engine's pace (its timers run late on a busy machine, never early).
    assert rate.endswith("per stream (mean of 2)") and 0 < float(rate.split()[0]) <= 52
    assert tokens == "12 completion tokens in all"
    assert float(summary["first token"].split()[0]) >= 0.2
    assert refused.returncode == 0
    assert rows(refused.stdout)["metrics"].startswith("refused (401)")


def test_status_shows_the_engines_cache_and_queue() -> None:
    runtime = FakeRuntime(cache_pages=16)
    engine = fake_engine(runtime)
    with serve_asgi(create_app(engine)) as server:
        assert httpx.post(server.url, json={"prompt": "hi", "max_tokens": 3}).status_code == 200
        idle = run_cli("status", server.url)
        runtime.gate.clear()  # "the GPU is busy": the next request waits for its first token
        # No client timeout: httpx's default 5 s once ran out while `promptwire status` started
        # on a machine at load 10, the client left, and its request was no longer in flight.
        waiting = threading.Thread(
            target=httpx.post,
            args=(server.url,),
            kwargs={"json": {"prompt": "hi"}, "timeout": None},
        )
        waiting.start()
        wait_until(lambda: engine.loop is not None and engine.loop.stats.pending_jobs == 1)
        busy = run_cli("status", server.url)
        runtime.gate.set()
        waiting.join(timeout=30)
    assert idle.returncode == 0, idle.stderr
    summary = rows(idle.stdout)
    assert summary["model"] == "fake-model"
    assert summary["cache"] == "0 of 16 pages used (0.0 %)"
    assert rows(busy.stdout)["in flight"] == "1 (1 waiting for a first token)"


class Loading(Engine):
    @property
    def ready(self) -> bool:
        return False

    async def stream(self, request):  # type: ignore[no-untyped-def]
        raise AssertionError("not ready")
        yield  # pragma: no cover


def test_status_of_an_endpoint_not_ready_or_not_there_exits_1() -> None:
    with serve_asgi(create_app(Loading())) as server:
        loading = run_cli("status", server.url)
    assert loading.returncode == 1
    assert rows(loading.stdout)["health"] == "not ready (the model is loading)"
    gone = run_cli("status", refused_url())
    assert gone.returncode == 1 and gone.stdout == ""
    (line,) = gone.stderr.strip().splitlines()
    assert line.startswith("error: could not reach the endpoint")


def test_status_of_an_endpoint_that_does_not_answer_says_so_in_time() -> None:
    """A Modal app scaled to zero holds the request while a container starts: the user learns
    that after --timeout, not never."""
    with socket.socket() as silent:  # accepts connections (the kernel does), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        result = run_cli("status", url, "--timeout", "0.5")
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "no answer within 0.5 s" in line and "--timeout" in line


def blocks(stdout: str) -> list[dict[str, str]]:
    """``status`` of a router: its own row, then one block of rows per member."""
    return [rows(block) for block in stdout.split("\n\n")]


def test_status_of_a_router_shows_each_member_with_its_own_credentials() -> None:
    """PROMPTWIRE_BACKEND=router and no URL: one block per member, each read with its own
    token (else the command's), a member that is down shown as down, not as the command's
    failure; exit 0 while one member is healthy, 1 when none is."""
    with (
        promptwire_serve("--api-key", TOKEN) as shared,
        promptwire_serve("--api-key", "own-token-7") as own,
    ):
        assert (
            httpx.post(
                own, json={"prompt": "hi"}, headers={"Authorization": "Bearer own-token-7"}
            ).status_code
            == 200
        )
        gone = refused_url()
        endpoints = [shared, {"url": own, "api_key": "own-token-7"}, gone]
        env = {
            "PROMPTWIRE_BACKEND": "router",
            "PROMPTWIRE_ROUTER__ENDPOINTS": json.dumps(endpoints),
            "PROMPTWIRE_API_KEY": TOKEN,
        }
        result = run_cli("status", env=env)
        down = run_cli("status", env={**env, "PROMPTWIRE_ROUTER__ENDPOINTS": json.dumps([gone])})
    assert result.returncode == 0, result.stderr
    router, first, second, third = blocks(result.stdout)
    assert router == {"router": "3 members (least-busy): 2 ready"}
    assert (first["endpoint"], first["health"]) == (shared, "ok")
    assert first["model"] == "dummy" and "requests" not in first  # none answered yet
    assert (second["endpoint"], second["health"]) == (own, "ok")
    assert second["requests"] == "1 answered (4xx: 0, 5xx: 0)"  # read with its own token
    assert third["endpoint"] == gone
    assert third["health"].startswith("could not reach the endpoint")
    for secret in (TOKEN, "own-token-7"):
        assert secret not in result.stdout + result.stderr
    assert down.returncode == 1
    assert blocks(down.stdout)[0] == {"router": "1 member (least-busy): 0 ready"}
