"""``GET /metrics`` on a real server on 127.0.0.1: every metric moves as requests run, read back
with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse
from promptwire import __version__
from promptwire.engine import EngineEvent, EngineMetric
from promptwire.modal import coldstart
from promptwire.protocol import PROTOCOL_VERSION, PromptRequest
from promptwire.server import create_app
from promptwire.server._errors import RequestError
from promptwire.server.observability import Observability
from promptwire_modal_dummy.settings import DummySettings

from tests.support.engines import ObservedEngine
from tests.support.metrics import Scrape, scrape
from tests.support.servers import serve_asgi, serve_engine

TOKEN = "metrics-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORDS = "one two three four five six seven eight nine ten eleven"  # 11 words, 11 "tokens"
FIRST_TOKEN_DELAY = 0.4
PACE = 20.0  # words per second after the first


class ReportingEngine(ObservedEngine):
    """The echo engine, reporting what it does through ``Engine.metrics()``. A generation waits
    for ``start`` before it begins and for ``resume`` after its first token, so a test can look
    at each stage however slow the machine."""

    def __init__(self, settings: DummySettings) -> None:
        super().__init__(settings)
        self.start_gate = threading.Event()
        self.resume_gate = threading.Event()
        self.start_gate.set()
        self.resume_gate.set()

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        await _passed(self.start_gate)
        first = True
        async for event in super().stream(request):
            yield event
            if first:
                first = False
                await _passed(self.resume_gate)

    def metrics(self) -> Sequence[EngineMetric]:
        return [
            EngineMetric("jobs_active", self.active, "Generations running."),
            EngineMetric("served", len(self.requests), "Generations begun.", kind="counter"),
            EngineMetric("slots", 3, "Slots by kind.", labels={"kind": "a"}),
            EngineMetric("slots", 5, "Slots by kind.", labels={"kind": "b"}),
        ]


async def _passed(gate: threading.Event) -> None:
    # Polled, not waited for in a thread: a test that fails before opening the gate must not
    # leave a thread blocked forever (the interpreter would wait for it at exit).
    while not gate.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture()
def recorded_phase() -> Iterator[None]:
    coldstart.record("checked_phase", 1.25)
    yield
    coldstart.reset()


def test_a_scrape_shows_every_metric_moving(recorded_phase: None) -> None:
    engine = ReportingEngine(
        DummySettings(echo=True, first_token_delay=FIRST_TOKEN_DELAY, tokens_per_second=PACE)
    )
    with serve_engine(engine, api_key=TOKEN) as server:
        before = scrape(server.url, TOKEN)
        assert before.value("promptwire_requests_total", route="/") is None
        assert before.value("promptwire_requests_queued") == 0
        (info,) = before.labels("promptwire_info")
        assert info == {"version": __version__, "model": "dummy", "protocol": PROTOCOL_VERSION}
        assert before.value("promptwire_cold_start_seconds", phase="checked_phase") == 1.25
        assert before.labels("promptwire_cold_start_seconds")[-1]["snapshot"] == "false"

        # A stream, watched while it runs: queued until its first token, then in flight.
        engine.start_gate.clear()
        engine.resume_gate.clear()
        events: list[str] = []

        def stream() -> None:
            with httpx.stream(
                "POST", server.url, json={"prompt": WORDS, "stream": True}, headers=AUTH
            ) as response:
                events.extend(line for line in response.iter_lines() if line.startswith("event"))

        thread = threading.Thread(target=stream)
        thread.start()
        now: dict[str, Scrape] = {}

        def seen(condition: Callable[[Scrape], bool]) -> bool:
            now["scrape"] = scrape(server.url, TOKEN)
            return condition(now["scrape"])

        wait_for(lambda: seen(lambda s: s.value("promptwire_requests_queued") == 1))
        assert now["scrape"].value("promptwire_requests_in_flight", route="/") == 1
        assert now["scrape"].value("promptwire_engine_jobs_active") == 0  # not begun
        engine.start_gate.set()
        wait_for(lambda: seen(lambda s: s.value("promptwire_requests_queued") == 0))
        assert now["scrape"].value("promptwire_requests_in_flight", route="/") == 1  # streaming
        assert now["scrape"].value("promptwire_engine_jobs_active") == 1
        # Its first token is counted as it comes, not once the stream has ended.
        assert now["scrape"].value("promptwire_time_to_first_token_seconds_count", route="/") == 1
        engine.resume_gate.set()
        thread.join(timeout=30)
        assert events[-1] == "event: done"

        whole = httpx.post(server.url, json={"prompt": "a b c"}, headers=AUTH)
        assert whole.status_code == 200
        assert httpx.post(server.url, json={"max_tokens": 1}, headers=AUTH).status_code == 422
        assert httpx.post(server.url, json={"prompt": "x"}).status_code == 401
        assert httpx.get(server.url + "no/such/path", headers=AUTH).status_code == 404

        after = scrape(server.url, TOKEN)

    def requests(**labels: str) -> float | None:
        return after.value("promptwire_requests_total", **labels)

    assert requests(route="/", status="200", error_type="") == 2
    assert requests(route="/", status="422", error_type="invalid_request") == 1
    assert requests(route="/", status="401", error_type="unauthorized") == 1
    assert requests(route="other", status="404", error_type="not_found") == 1
    assert after.types["promptwire_requests"] == "counter"
    assert after.value("promptwire_requests_in_flight", route="/") == 0
    assert after.value("promptwire_requests_queued") == 0

    # Time to first token: both generations waited FIRST_TOKEN_DELAY; none was under 0.25 s.
    ttft = "promptwire_time_to_first_token_seconds"
    assert after.value(f"{ttft}_count", route="/") == 2
    assert after.value(f"{ttft}_sum", route="/") >= 2 * FIRST_TOKEN_DELAY
    assert after.value(f"{ttft}_bucket", route="/", le="0.25") == 0
    # Whole-request latency: the four requests to "/", the stream lasting 10 more words.
    duration = "promptwire_request_duration_seconds"
    assert after.value(f"{duration}_count", route="/") == 4
    assert after.value(f"{duration}_sum", route="/") >= 2 * FIRST_TOKEN_DELAY + 10 / PACE
    # Tokens, as the replies counted them.
    assert after.value("promptwire_prompt_tokens_total", route="/") == 11 + 3
    assert after.value("promptwire_completion_tokens_total", route="/") == 11 + 3
    # Tokens per second of each generation after its first token: at most the engine's pace
    # (its timers only ever run late; how late depends on the machine's load).
    rate = "promptwire_stream_tokens_per_second"
    assert after.value(f"{rate}_count", route="/") == 2
    mean = after.value(f"{rate}_sum", route="/") / 2  # type: ignore[operator]
    assert 0 < mean <= 1.05 * PACE
    # The engine's own metrics, named promptwire_engine_*.
    assert after.types["promptwire_engine_jobs_active"] == "gauge"
    assert after.value("promptwire_engine_jobs_active") == 0
    assert after.types["promptwire_engine_served"] == "counter"
    assert after.value("promptwire_engine_served_total") == 2
    assert after.value("promptwire_engine_slots", kind="a") == 3
    assert after.value("promptwire_engine_slots", kind="b") == 5


def test_each_app_counts_its_own_requests() -> None:
    with (
        serve_engine(ReportingEngine(DummySettings())) as first,
        serve_engine(ReportingEngine(DummySettings())) as second,
    ):
        for _ in range(3):
            assert httpx.post(first.url, json={"prompt": "p"}).status_code == 200
        assert scrape(first.url).value("promptwire_requests_total", route="/") == 3
        assert scrape(second.url).value("promptwire_requests_total", route="/") is None


def test_metrics_need_the_token_unless_public_and_can_be_off() -> None:
    engine = ReportingEngine(DummySettings())
    with serve_engine(engine, api_key=TOKEN) as server:
        refused = httpx.get(server.url + "metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "unauthorized"
    public = Observability(metrics_public=True)
    with serve_engine(engine, api_key=TOKEN, observability=public) as server:
        assert httpx.get(server.url + "metrics").status_code == 200
        assert httpx.post(server.url, json={"prompt": "p"}).status_code == 401  # only /metrics
    with serve_engine(engine, observability=Observability(metrics=False)) as server:
        assert httpx.get(server.url + "metrics").status_code == 404
        reply = httpx.post(server.url, json={"prompt": "p"})
        assert reply.status_code == 200 and reply.headers["x-request-id"]


class BrokenMetricsEngine(ReportingEngine):
    def __init__(self, settings: DummySettings, fail: bool) -> None:
        super().__init__(settings)
        self.fail = fail

    def metrics(self) -> Sequence[EngineMetric]:
        if self.fail:
            raise RuntimeError("metrics bug")
        return [
            EngineMetric("Bad-Name", 1, "Not a Prometheus name."),
            EngineMetric("fine", 1, "Kept."),
            EngineMetric("mixed", 1, "Labels.", labels={"a": "1"}),
            EngineMetric("mixed", 2, "Labels.", labels={"b": "2"}),  # other label names
        ]


@pytest.mark.parametrize("fail", [True, False])
def test_an_engines_faulty_metrics_cost_only_those_figures(
    fail: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_engine(BrokenMetricsEngine(DummySettings(), fail)) as server:
        assert httpx.post(server.url, json={"prompt": "p"}).status_code == 200
        for _ in range(2):
            found = scrape(server.url)
            assert found.value("promptwire_requests_total", route="/") == 1
    names = {name for name, _, _ in found.samples}
    if fail:
        assert not any(name.startswith("promptwire_engine_") for name in names)
    else:
        assert "promptwire_engine_fine" in names and "promptwire_engine_Bad-Name" not in names
        assert found.labels("promptwire_engine_mixed") == [{"a": "1"}]
    warnings = [r for r in caplog.records if r.name == "promptwire.server.observability._metrics"]
    assert len(warnings) == (1 if fail else 2)  # once each, not at every scrape


def test_a_route_added_later_is_counted_under_its_own_path() -> None:
    """What the OpenAI-compatible routes get without doing anything: their requests counted by
    their path, the engine's tokens and first token seen, errors carrying the request id."""
    app = create_app(ReportingEngine(DummySettings(echo=True)))

    async def echo(request: Request) -> JSONResponse:
        body = await request.json()
        if "prompt" not in body:
            raise RequestError(422, "a prompt is needed")
        completion = await request.app.state.engine.complete(PromptRequest(prompt=body["prompt"]))
        return JSONResponse({"text": completion.text})

    app.add_api_route("/v1/echo", echo, methods=["POST"])
    with serve_asgi(app) as server:
        assert httpx.post(server.url + "v1/echo", json={"prompt": "a b c"}).json() == {
            "text": "a b c"
        }
        refused = httpx.post(server.url + "v1/echo", json={})
        assert refused.status_code == 422
        assert refused.json()["error"]["request_id"] == refused.headers["x-request-id"]
        found = scrape(server.url)
    assert found.value("promptwire_requests_total", route="/v1/echo", status="200") == 1
    assert (
        found.value(
            "promptwire_requests_total",
            route="/v1/echo",
            status="422",
            error_type="invalid_request",
        )
        == 1
    )
    assert found.value("promptwire_prompt_tokens_total", route="/v1/echo") == 3
    assert found.value("promptwire_completion_tokens_total", route="/v1/echo") == 3
    assert found.value("promptwire_time_to_first_token_seconds_count", route="/v1/echo") == 1


def test_a_stream_left_before_its_end_is_counted_as_such() -> None:
    engine = ReportingEngine(DummySettings(echo=True, tokens_per_second=10))
    with serve_engine(engine) as server:
        with httpx.stream(
            "POST", server.url, json={"prompt": WORDS * 5, "stream": True}
        ) as response:
            next(response.iter_lines())  # the first event, then the client leaves

        def counted() -> bool:
            value = scrape(server.url).value(
                "promptwire_requests_total", error_type="client_disconnected"
            )
            return value == 1

        wait_for(counted)
        found = scrape(server.url)
        assert found.value("promptwire_requests_in_flight", route="/") == 0
        assert found.value("promptwire_engine_jobs_active") == 0  # the generation was cancelled


def test_a_whole_reply_waiting_for_its_first_token_is_queued() -> None:
    engine = ReportingEngine(DummySettings())
    engine.start_gate.clear()
    with serve_engine(engine) as server:
        thread = threading.Thread(
            target=httpx.post, args=(server.url,), kwargs={"json": {"prompt": "p"}}
        )
        thread.start()
        wait_for(lambda: scrape(server.url).value("promptwire_requests_queued") == 1)
        engine.start_gate.set()
        thread.join(timeout=30)
        assert scrape(server.url).value("promptwire_requests_queued") == 0


def test_under_concurrent_load_the_figures_add_up() -> None:
    """Twelve requests at once, streams and whole replies: all in flight and waiting together,
    then every one counted once, with its tokens."""
    engine = ReportingEngine(DummySettings(echo=True))
    engine.start_gate.clear()
    count = 12
    statuses: list[int] = []

    def ask(index: int) -> None:
        body = {"prompt": WORDS, "stream": index % 2 == 0}
        statuses.append(httpx.post(server.url, json=body, timeout=60).status_code)

    with serve_engine(engine) as server:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        wait_for(lambda: scrape(server.url).value("promptwire_requests_queued") == count)
        busy = scrape(server.url)
        engine.start_gate.set()
        for thread in threads:
            thread.join(timeout=60)
        after = scrape(server.url)
    assert statuses == [200] * count
    assert busy.value("promptwire_requests_in_flight", route="/") == count
    assert after.value("promptwire_requests_in_flight", route="/") == 0
    assert after.value("promptwire_requests_queued") == 0
    assert after.value("promptwire_requests_total", route="/", status="200") == count
    assert after.value("promptwire_completion_tokens_total", route="/") == count * 11
    for histogram in ("time_to_first_token_seconds", "request_duration_seconds"):
        assert after.value(f"promptwire_{histogram}_count", route="/") == count
    assert after.value("promptwire_stream_tokens_per_second_count", route="/") == count
