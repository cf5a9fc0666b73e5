"""The fast variant of the load test, run by CI: ``promptwire serve`` in a child process takes
2,000 whole-reply requests at 32 in flight from each client and rounds of 50 streams open at
once, with no error, no wrong answer, no stream kept waiting and no memory growth. The long run
(20,000 at 64, rounds of 200 streams) is ``uv run python -m tests.reliability.loadtest``; its
figures are in RELIABILITY.md."""

from __future__ import annotations

import pytest

from tests.reliability.loadtest import LoadConfig, run_load

FAST = LoadConfig(
    requests=2_000,
    concurrency=32,
    streams=50,
    stream_words=50,
    # Each stream lasts four seconds: under CI's load (four test workers on two cores) a round's
    # first events once all came 1.6 s late together; a stream queued behind another waits 4 s.
    stream_rate=12.5,
    stream_rounds=2,
    warmup=300,
    max_growth_mib=16.0,
)


@pytest.mark.timeout(600)
def test_fast_load_has_no_errors_and_no_memory_growth(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_load(FAST)
    with capsys.disabled():
        print("\n" + report.text())  # the figures, in CI's log too
    assert report.errors == 0, report.text()
    for phase in report.phases:
        assert phase.count == len(phase.latencies_ms), phase.name  # every request answered
    for memory in report.memory:
        assert memory.alive, memory.text()
        assert memory.growth_mib <= FAST.max_growth_mib, memory.text()
    streams = next(p for p in report.phases if p.name == "streams")
    # All open together: none waits for another to finish before its first event comes (a
    # queued stream would wait the four seconds one takes).
    lasts = FAST.stream_words / FAST.stream_rate
    assert max(streams.first_event_ms) < lasts * 1000 / 2, report.text()
    assert report.ok
