"""How soon ``thread_wait=auto`` is back on all threads once a busy neighbour stops.

Benchmarks 11 and 14 run each repetition's idle rounds right after the busy rounds of the one
before; a server still on one thread there makes about one thread's speed. This runs promptwire
alone (SmolLM2, 2 threads, as benchmark 11) through busy rounds (1 and 8 streams beside one
busy-loop process), a pause, and an idle 1-stream round, and reads from ``GET /metrics`` how many
forward passes of that idle round ran on one thread, against a second idle round right after
it (the steady state: only the rare tries).

    uv run --group bench python -m benchmarks.thread_recovery [--repetitions 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import real_model

PASSES = "promptwire_engine_forward_passes_total"
ONE_THREAD = "promptwire_engine_forward_passes_one_thread_total"
#: Seconds between the busy rounds and the idle one (benchmark 11 runs other servers there).
PAUSE = 3.0


def _passes(url: str) -> tuple[float, float]:
    """(forward passes, those on one thread) so far, read by prometheus-client's parser."""
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(httpx.get(url + "metrics").text)
        for sample in family.samples
    }
    if PASSES not in values or ONE_THREAD not in values:
        raise SystemExit(f"{PASSES} and {ONE_THREAD} are not both on /metrics")
    return values[PASSES], values[ONE_THREAD]


def _round(url: str, pid: int, streams: int, number: int, busy: bool) -> tuple[float, float]:
    """One round: (tokens/s, passes on one thread)."""
    before = _passes(url)
    asked = real_model.prompts(300 + number, streams)
    if busy:
        with real_model.busy_neighbour():
            result = real_model.measured_round(url, pid, asked)
    else:
        result = real_model.measured_round(url, pid, asked)
    after = _passes(url)
    return result.rate, after[1] - before[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    server = real_model.promptwire_server(2, {"PROMPTWIRE_METRICS": "true"})
    after_busy: list[float] = []
    steady: list[float] = []
    with real_model.started({"promptwire": server}) as pids:
        pid, number = pids["promptwire"], 0
        _round(server.url, pid, 1, number, busy=False)  # both counts measured
        for repetition in range(args.repetitions):
            for streams in (1, 8):
                number += 1
                rate, one = _round(server.url, pid, streams, number, busy=True)
                said = f"{rate:.1f} tokens/s, {one:.0f} passes on one thread"
                print(f"rep. {repetition + 1} busy {streams}: {said}")
            time.sleep(PAUSE)
            for kept in (after_busy, steady):
                number += 1
                rate, one = _round(server.url, pid, 1, number, busy=False)
                kept.append(one)
                said = f"{rate:.1f} tokens/s, {one:.0f} passes on one thread"
                print(f"rep. {repetition + 1} idle 1: {said}")
    print(
        f"passes on one thread in the idle round after the busy ones: {after_busy} "
        f"(median {statistics.median(after_busy):.0f}); in the next idle round: {steady} "
        f"(median {statistics.median(steady):.0f})"
    )


if __name__ == "__main__":
    main()
