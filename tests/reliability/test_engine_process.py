"""An engine in a process of its own (``ProcessEngine``), served by a real uvicorn server.

The engine is the dummy engine plus what native code does to a process (``HazardEngine``): it
answers as it does in-process, its ``prepare`` errors keep their status, a client that leaves
cancels the generation in the child, and when the child aborts every request in flight gets a
typed error, ``/health`` says it is restarting, and the next request is served. A child that
aborts at every start is not restarted for ever. A step that holds the child's GIL for seconds
does not slow ``/health``. No engine process outlives its server, however the server ends.
A worker engine (``WordEngine``) hands its events off to the server from its worker thread: the
same replies, and a client that leaves cancels there too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from promptwire.engine.process import ProcessEngine, RestartPolicy
from promptwire.server import BackgroundServer
from promptwire_modal_dummy.settings import DummySettings

from tests.support.network import free_port
from tests.support.process_engines import HazardEngine, HazardSettings, create_hazard_engine
from tests.support.servers import serve_engine
from tests.support.word_engine import WordEngine, WordSettings, create_word_engine

FAST_RESTARTS = RestartPolicy(first_delay=0.05, max_delay=0.2, max_start_failures=2)


def _process_engine(settings: HazardSettings | None = None, **options: Any) -> ProcessEngine[Any]:
    return ProcessEngine(create_hazard_engine, settings or HazardSettings(), **options)


@contextmanager
def _served(settings: HazardSettings | None = None, **options: Any) -> Iterator[tuple[str, Any]]:
    engine = _process_engine(settings, **options)
    with serve_engine(engine) as server:
        yield server.url, engine


def _metric(url: str, name: str) -> float | None:
    for line in httpx.get(url + "metrics").text.splitlines():
        if line.startswith(f"promptwire_engine_{name} "):
            return float(line.split()[1])
    return None


def _wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("", {"prompt": "one two three four five"}),
    ("", {"prompt": "one two three four five", "max_tokens": 2}),
    ("", {"prompt": "alpha beta STOP gamma", "stop": ["STOP"], "stream": True}),
    ("", {"prompt": "a b c d e f g h", "stream": True}),
    (
        "v1/chat/completions",
        {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8},
    ),
    ("v1/completions", {"prompt": ["x y z", "p q"], "max_tokens": 4}),
]


def _answers(url: str) -> list[Any]:
    answers: list[Any] = []
    for path, body in REQUESTS:
        response = httpx.post(url + path, json=body, timeout=30)
        assert response.status_code == 200, response.text
        if body.get("stream"):
            answers.append(response.text)
        else:
            reply = response.json()
            for key in ("id", "created", "system_fingerprint"):
                reply.pop(key, None)
            answers.append(reply)
    return answers


def test_replies_and_streams_equal_the_in_process_engines() -> None:
    with serve_engine(HazardEngine(HazardSettings())) as server:
        alone = _answers(server.url)
    with _served() as (url, _):
        assert _answers(url) == alone


def test_handed_off_generations_equal_the_in_process_engines() -> None:
    """A worker engine's events go from its worker thread straight to the server (the hand-off):
    the same replies and streams, stop sequences and ``max_tokens`` applied in the child."""
    with serve_engine(WordEngine()) as server:
        alone = _answers(server.url)
    with serve_engine(ProcessEngine(create_word_engine, WordSettings())) as server:
        assert _answers(server.url) == alone
        generations = 7  # the last request has two prompts
        assert _wait_for(lambda: _metric(server.url, "handed_off_total") == generations, 5)


def test_a_client_that_leaves_cancels_a_handed_off_generation() -> None:
    engine = ProcessEngine(create_word_engine, WordSettings(pass_seconds=0.05))
    with serve_engine(engine) as server:
        _leave_a_stream_early(server.url)


OUT_OF_ORDER = "engine restarting: it went out of order (its worker stopped on RuntimeError)"


def test_a_worker_that_failed_refuses_handed_off_requests_with_its_error() -> None:
    """A pass that raises fails its requests (500) and leaves the worker out of order: the next
    request is refused at once with a 503 a client may retry, not left waiting. Which refusal
    depends on a race: the child refuses it when it hands it off (the worker's reason), or, once
    the child's status report (every 0.5 s) has told the server, the server does (CI saw
    both). The restart waits 5 s here, so the request cannot find a new engine process already
    serving."""
    engine = ProcessEngine(create_word_engine, WordSettings(), restart=RestartPolicy(5.0))
    with serve_engine(engine) as server:
        failed = httpx.post(server.url, json={"prompt": "a !fail b"}, timeout=30)
        assert failed.status_code == 500
        refused = httpx.post(server.url, json={"prompt": "a b"}, timeout=30)
        error = refused.json()["error"]
        assert (refused.status_code, error["type"], error["message"]) in {
            (503, "not_ready", "the engine is out of order (RuntimeError)"),
            (503, "not_ready", OUT_OF_ORDER),
        }


def test_in_process_an_engine_out_of_order_says_so() -> None:
    """Without a process to restart, the server cannot mend it: every request and ``/health``
    name what happened and what to do, rather than "the model is loading" for ever."""
    reason = "the engine is out of order (its worker stopped on RuntimeError); restart the server"
    with serve_engine(WordEngine()) as server:
        assert httpx.post(server.url, json={"prompt": "a !fail b"}, timeout=30).status_code == 500
        health = httpx.get(server.url + "health")
        refused = httpx.post(server.url, json={"prompt": "a b"}, timeout=30)
    assert health.status_code == 503 and health.json()["error"]["message"] == reason
    assert refused.status_code == 503 and refused.json()["error"]["message"] == reason


def test_an_engine_out_of_order_is_restarted_in_a_new_process() -> None:
    """A worker that stopped on an error serves nothing more, though its process lives: the
    server stops that process and starts another, as after a crash, and ``/health`` says why
    meanwhile (not "the model is loading", for ever)."""
    engine = ProcessEngine(create_word_engine, WordSettings(), restart=RestartPolicy(2.0))
    with serve_engine(engine) as server:
        first_pid = engine.pid
        assert httpx.post(server.url, json={"prompt": "a !fail b"}, timeout=30).status_code == 500
        statuses: list[tuple[int, str]] = []

        def serving_again() -> bool:
            health = httpx.get(server.url + "health")
            statuses.append((health.status_code, health.json().get("error", {}).get("message")))
            return health.status_code == 200

        assert _wait_for(lambda: not serving_again(), 10)  # once the child has reported it
        assert _wait_for(serving_again, 60)
        assert (503, OUT_OF_ORDER) in statuses, statuses
        reply = httpx.post(server.url, json={"prompt": "a b"}, timeout=30)
        assert reply.status_code == 200 and reply.json()["prompt"] == "a b"
        assert engine.pid != first_pid
        assert _metric(server.url, "process_restarts_total") == 1


def _refusals(url: str) -> list[tuple[int, str | None, Any]]:
    refusals = []
    asked = [
        ("", "reject"),
        ("", "overload"),
        ("v1/completions", "reject"),
        ("", "conflict"),
        ("", "teapot"),
        ("v1/completions", "teapot"),
    ]
    for path, prompt in asked:
        response = httpx.post(url + path, json={"model": "dummy", "prompt": prompt})
        error = response.json()["error"]
        error.pop("request_id", None)
        refusals.append((response.status_code, response.headers.get("retry-after"), error))
    return refusals


def test_prepare_errors_keep_their_status_and_retry_after() -> None:
    with serve_engine(HazardEngine(HazardSettings())) as server:
        alone = _refusals(server.url)
    with _served() as (url, _):
        refusals = _refusals(url)
    assert refusals == alone
    # OpenAI's 400 for a 422; a backend's own 409 kept across the process (it was a 500); a
    # status that is no error status a 500 (a 200 answered the error as a reply).
    assert [status for status, _, _ in refusals] == [422, 503, 400, 409, 500, 500]
    assert refusals[0][2]["message"] == "this prompt is refused by the engine"
    assert refusals[1][1] == "7"
    assert refusals[3][2] == {"type": "conflict", "message": "this prompt conflicts (42)"}
    assert refusals[4][2]["type"] == "server_error"


def test_a_client_that_leaves_cancels_the_generation_in_the_child() -> None:
    settings = HazardSettings(dummy=DummySettings(echo=True, tokens_per_second=20))
    with _served(settings) as (url, _):
        _leave_a_stream_early(url)


def _leave_a_stream_early(url: str) -> None:
    """Read a 200-word stream's first event, leave, and see the child cancel it."""
    words = " ".join(f"w{i}" for i in range(200))
    with httpx.stream("POST", url, json={"prompt": words, "stream": True}) as response:
        next(response.iter_lines())  # the first event: the child is generating
    assert _wait_for(
        lambda: _metric(url, "cancelled_total") == 1 and _metric(url, "active") == 0, 10
    )


def test_an_abort_fails_the_requests_in_flight_and_the_engine_comes_back() -> None:
    settings = HazardSettings(dummy=DummySettings(echo=True, tokens_per_second=10))
    with _served(settings, restart=FAST_RESTARTS) as (url, engine):
        first_pid = engine.pid
        other: list[Any] = []

        def bystander() -> None:
            body = {"prompt": " ".join(["word"] * 100), "stream": True}
            with httpx.stream("POST", url, json=body, timeout=30) as response:
                other.extend(_events(response))

        thread = threading.Thread(target=bystander)
        thread.start()
        assert _wait_for(lambda: _metric(url, "active") == 1, 10)
        with httpx.stream("POST", url, json={"prompt": "abort now", "stream": True}) as response:
            events = _events(response)
        thread.join(30)
        assert events[0] == ("delta", {"text": "aborting "})
        name, error = events[-1]
        assert name == "error"
        assert error["error"]["type"] == "server_error"
        assert "the engine process died (SIGABRT)" in error["error"]["message"]
        assert other[-1][0] == "error"  # the request beside it was failed too, not left hanging
        assert "SIGABRT" in other[-1][1]["error"]["message"]
        statuses: list[tuple[int, str]] = []

        def serving_again() -> bool:
            health = httpx.get(url + "health")
            statuses.append((health.status_code, health.text))
            return health.status_code == 200

        assert _wait_for(serving_again, 30)
        assert any(
            code == 503 and "engine restarting" in text and "SIGABRT" in text
            for code, text in statuses
        ), statuses[:3]
        reply = httpx.post(url, json={"prompt": "back again"}, timeout=30)
        assert reply.status_code == 200 and reply.json()["prompt"] == "back again"
        assert engine.pid != first_pid
        assert _metric(url, "process_restarts_total") == 1
        assert not psutil.pid_exists(first_pid) or psutil.Process(first_pid).status() == "zombie"


def test_a_child_that_dies_at_every_start_is_left_down(tmp_path: Path) -> None:
    marker = tmp_path / "abort-at-start"
    settings = HazardSettings(abort_at_start_if=marker)
    with _served(settings, restart=FAST_RESTARTS) as (url, _):
        marker.touch()
        response = httpx.post(url, json={"prompt": "abort now"})
        assert response.status_code == 500

        def down() -> bool:
            health = httpx.get(url + "health")
            return health.status_code == 503 and "engine down" in health.text

        assert _wait_for(down, 30)
        health = httpx.get(url + "health").json()["error"]["message"]
        assert "failed to start 2 times in a row; not restarting" in health
        assert "the engine process died while starting (SIGABRT)" in health
        refused = httpx.post(url, json={"prompt": "hello"})
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "not_ready"
        time.sleep(1.0)  # no restart is pending: no engine process appears
        assert _engine_children(os.getpid()) == []


def test_a_step_holding_the_childs_gil_does_not_stall_the_server() -> None:
    with _served() as (url, _):
        took: list[float] = []

        def hold() -> None:
            start = time.perf_counter()
            httpx.post(url, json={"prompt": "hold 3"}, timeout=30)
            took.append(time.perf_counter() - start)

        thread = threading.Thread(target=hold)
        thread.start()
        time.sleep(0.5)  # the hold has begun
        latencies: list[float] = []
        with httpx.Client() as client:
            while thread.is_alive() and len(latencies) < 40:
                for path in ("health", "v1/models", "metrics"):
                    start = time.perf_counter()
                    assert client.get(url + path).status_code == 200
                    latencies.append(time.perf_counter() - start)
                time.sleep(0.05)
        thread.join(30)
        assert took and took[0] >= 3.0  # the child really was held
        assert len(latencies) >= 9
        assert max(latencies) < 0.5, sorted(latencies)[-3:]


def test_no_engine_process_outlives_its_server() -> None:
    engine = _process_engine()
    server = BackgroundServer(_wrap(engine)).start()
    pid = engine.pid
    assert pid is not None and psutil.pid_exists(pid)
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def _wrap(engine: ProcessEngine[Any]) -> Any:
    from promptwire.server import create_app

    return create_app(engine)


def _engine_children(pid: int) -> list[psutil.Process]:
    """The engine processes among ``pid``'s children."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "promptwire.engine.process._child" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@contextmanager
def _cli_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``promptwire serve`` of the dummy backend with its engine in a process of its own."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWIRE_")}
    env["PROMPTWIRE_ENGINE_PROCESS"] = "true"
    command = [sys.executable, "-c", "from promptwire.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, "--backend", "modal_dummy", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:

        def up() -> bool:
            try:
                return httpx.get(url + "health").status_code == 200
            except httpx.TransportError:
                return False

        assert _wait_for(up, 60), "promptwire serve did not start"
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


@pytest.mark.parametrize("end", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_promptwire_serve_leaves_no_orphan_engine(end: signal.Signals) -> None:
    with _cli_server() as (process, url):
        children = _engine_children(process.pid)
        assert len(children) == 1
        assert httpx.post(url, json={"prompt": "hi"}).json()["prompt"] == "hello world"
        process.send_signal(end)
        process.wait(30)
        _, alive = psutil.wait_procs(children, timeout=20)
        assert alive == [], f"the engine process outlived promptwire serve ({end.name})"


def test_a_request_after_an_idle_engine_died_is_a_503_to_retry() -> None:
    """The engine process died idle (killed, out of memory) and the server has not yet read its
    end: a request arriving then never reaches it, so it is told to retry (503 ``not_ready``),
    not the 500 of a request that may have killed the engine (which clients do not retry)."""
    chat = {"model": "dummy", "messages": [{"role": "user", "content": "hi"}]}
    with _cli_server() as (process, url):
        for _ in range(3):
            assert _wait_for(lambda: httpx.get(url + "health").status_code == 200)
            (child,) = _engine_children(process.pid)
            child.kill()

            assert _wait_for(lambda child=child: _exited(child), 10)
            for answer in (
                httpx.post(url + "v1/chat/completions", json=chat),
                httpx.post(url, json={"prompt": "hi", "stream": True}),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "1"
        assert _wait_for(lambda: httpx.get(url + "health").status_code == 200)
        assert httpx.post(url, json={"prompt": "hi"}).json()["prompt"] == "hello world"


def test_a_request_the_dead_engine_never_got_is_not_ready_not_died() -> None:
    """Between the engine process's exit and the server's reading of it, a request's message
    goes to a closed socket: the request never reached the engine, so it is ``EngineNotReady``
    (a 503 to retry); it was ``EngineProcessDied``, the 500 of a request that may have killed
    the engine. The server's event loop is held while the child dies, to open that window."""
    from promptwire.engine import EngineNotReady
    from promptwire.protocol import PromptRequest

    with _served() as (_url, engine):
        loop, pid = engine._loop, engine.pid
        assert loop is not None and pid is not None
        held, release = threading.Event(), threading.Event()

        def hold() -> None:  # the server reads nothing until the test is done
            held.set()
            release.wait(60)

        loop.call_soon_threadsafe(hold)
        try:
            assert held.wait(10)
            child = psutil.Process(pid)
            child.kill()
            assert _wait_for(lambda: _exited(child), 10)
            with pytest.raises(EngineNotReady, match="before this request reached it"):
                engine.count_prompt_tokens(PromptRequest(prompt="hi"))
        finally:
            release.set()


def _exited(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_silent_engine_process_is_not_ready_then_started_again() -> None:
    """A child that says nothing (stopped here; hung in native code in life) is not ready after
    ``silent_not_ready`` s (``/health`` 503 saying so, new requests refused) and is stopped and
    started again after ``silent_retire`` s. It used to leave ``/health`` at 200 while every
    request waited for good."""
    policy = RestartPolicy(first_delay=0.05, max_delay=0.2, silent_not_ready=1.0, silent_retire=4.0)
    settings = HazardSettings(dummy=DummySettings(echo=True))
    with _served(settings, restart=policy) as (url, engine):
        assert httpx.post(url, json={"prompt": "before"}).json()["prompt"] == "before"
        time.sleep(1.5)  # an idle child is not silent: it reports every half second
        assert httpx.get(url + "health").status_code == 200
        first_pid = engine.pid
        os.kill(first_pid, signal.SIGSTOP)
        try:
            statuses: list[tuple[int, str]] = []

            def health() -> int:
                answer = httpx.get(url + "health")
                statuses.append((answer.status_code, answer.text))
                return answer.status_code

            assert _wait_for(lambda: health() == 503, 10), statuses[-3:]
            assert "has not answered" in statuses[-1][1], statuses[-1]
            refused = httpx.post(url, json={"prompt": "while stopped"})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert _wait_for(lambda: engine.pid not in (None, first_pid) and health() == 200, 30)
        finally:
            if psutil.pid_exists(first_pid):
                os.kill(first_pid, signal.SIGCONT)
        assert httpx.post(url, json={"prompt": "after"}).json()["prompt"] == "after"
        assert _metric(url, "process_restarts_total") == 1
