"""``thread_wait="auto"``'s choice of threads for each forward pass, driven by made-up pass
times on a made-up clock: the faster count wins, a change of speed is followed, one slow pass
decides nothing, and a count that keeps losing is tried more and more rarely."""

from __future__ import annotations

import itertools

import pytest

from tests.support.optional import LLAMACPP_PLUGIN_MISSING

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.thread_choice import (
    FIRST_TRY,
    LAST_TRY,
    PASSES_BETWEEN_TRIES,
    TRY_PASSES,
    ThreadChoice,
)

IDLE = {2: 0.009, 1: 0.014}  # seconds a one-token pass takes on 2 threads and on 1
BUSY = {2: 0.030, 1: 0.014}  # beside a busy process: two threads wait for each other


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _choice() -> tuple[ThreadChoice, Clock]:
    clock = Clock()
    return ThreadChoice(2, clock), clock


def _run(
    choice: ThreadChoice,
    clock: Clock,
    passes: int,
    seconds: dict[int, float],
    tokens: int = 1,
    starts: list[float] | None = None,
) -> list[int]:
    """``passes`` passes of ``tokens`` tokens, each taking what ``seconds`` says (per token)
    for its count of threads; the counts chosen (and in ``starts``, when each run of two
    threads began)."""
    chosen: list[int] = []
    for _ in range(passes):
        threads = choice.threads_for(tokens)
        if starts is not None and threads == 2 and chosen[-1:] == [1]:
            starts.append(clock.now)
        clock.now += seconds[threads] * tokens
        choice.measured(tokens, threads, seconds[threads] * tokens)
        chosen.append(threads)
    return chosen


def test_each_count_is_measured_first_then_the_faster_runs() -> None:
    choice, clock = _choice()
    chosen = _run(choice, clock, 2 * TRY_PASSES + 20, IDLE)
    assert chosen[: 2 * TRY_PASSES] == [2] * TRY_PASSES + [1] * TRY_PASSES
    assert set(chosen[2 * TRY_PASSES :]) == {2}


def test_a_busy_machine_turns_it_to_one_thread_and_an_idle_one_back() -> None:
    choice, clock = _choice()
    _run(choice, clock, 100, IDLE)  # two threads
    busy = _run(choice, clock, 200, BUSY)  # a neighbour takes a core
    assert busy[TRY_PASSES : TRY_PASSES + 10].count(1) >= 10 - TRY_PASSES  # within a few passes
    assert busy[-100:].count(2) <= TRY_PASSES  # two threads only tried, now and then
    idle = _run(choice, clock, int(LAST_TRY / IDLE[1]) + 60, IDLE)
    assert idle[-40:].count(2) >= 40 - TRY_PASSES  # one thread only tried


def test_one_slow_pass_decides_nothing() -> None:
    """The first pass on two threads after one wakes a thread that slept: slow, every time."""
    choice, clock = _choice()
    _run(choice, clock, 40, BUSY)
    chosen: list[int] = []
    for _ in range(int(LAST_TRY / IDLE[1]) + 60):  # idle again
        threads = choice.threads_for(1)
        woken = threads == 2 and chosen[-1:] == [1]
        seconds = 0.050 if woken else IDLE[threads]
        clock.now += seconds
        choice.measured(1, threads, seconds)
        chosen.append(threads)
    assert chosen[-40:].count(2) >= 40 - TRY_PASSES  # two threads, but for one try of one


def test_a_losing_count_is_tried_more_rarely_up_to_a_limit() -> None:
    choice, clock = _choice()
    starts: list[float] = []
    _run(choice, clock, 4000, BUSY, starts=starts)
    gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(starts)]
    assert gaps == sorted(gaps)  # each loss doubles the wait
    try_seconds = TRY_PASSES * BUSY[2]
    assert gaps[0] == pytest.approx(2 * FIRST_TRY + try_seconds, abs=BUSY[1])
    assert gaps[-1] == pytest.approx(LAST_TRY + try_seconds, abs=BUSY[1])


def test_sizes_of_pass_are_chosen_apart() -> None:
    """A prompt's large pass can gain from two threads while single tokens do not."""
    choice, clock = _choice()
    _run(choice, clock, 50, BUSY, tokens=1)
    large = _run(choice, clock, 50, {2: 0.001, 1: 0.002}, tokens=128)
    single = _run(choice, clock, 20, BUSY, tokens=1)
    assert large[-20:].count(2) >= 20 - TRY_PASSES
    assert single.count(1) >= 20 - TRY_PASSES


def test_a_pause_does_not_make_the_next_request_a_try() -> None:
    """A prompt's few large passes after each pause (which set its first token's time) run on
    the faster count: a try waits for enough passes as well as for its time."""
    choice, clock = _choice()
    large = {2: 0.001, 1: 0.002}
    _run(choice, clock, 2 * TRY_PASSES, large, tokens=128)  # both measured
    chosen = []
    rounds = 5
    assert rounds * 3 <= PASSES_BETWEEN_TRIES
    for _ in range(rounds):
        clock.now += 20 * LAST_TRY  # a pause, then a request's three prompt passes
        chosen += _run(choice, clock, 3, large, tokens=128)
    assert chosen == [2] * len(chosen)


def test_one_thread_has_nothing_to_choose() -> None:
    choice, clock = ThreadChoice(1), Clock()
    assert set(_run(choice, clock, 50, {1: 0.01})) == {1}
