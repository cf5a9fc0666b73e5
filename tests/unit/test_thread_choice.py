"""``thread_wait="auto"``'s choice of threads for each forward pass, driven by made-up pass
times: the faster count wins, a change of speed is followed, one slow pass decides nothing,
tries of the slower count take about a fiftieth of the time, and (from the CPU time the passes
use) hardly any while nothing else wants the cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.optional import LLAMACPP_PLUGIN_MISSING

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.idle_cores import MAX_WINDOW, MIN_WINDOW, IdleCores
from promptwire_llamacpp.thread_choice import (
    HAD_CORES,
    LAST_TRY,
    SHARE_PASSES,
    TRY_PASSES,
    TRY_SHARE,
    ThreadChoice,
)

IDLE = {2: 0.009, 1: 0.014}  # seconds a one-token pass takes on 2 threads and on 1
BUSY = {2: 0.030, 1: 0.014}  # beside a busy process: two threads wait for each other


def _run(
    choice: ThreadChoice,
    passes: int,
    seconds: dict[int, float],
    tokens: int = 1,
    *,
    prompt: bool = False,
    share: float | None = None,
) -> list[int]:
    """``passes`` passes of ``tokens`` tokens (``prompt``: holding prompt tokens), each taking
    what ``seconds`` says (per token) for its count of threads; the counts chosen. ``share``:
    the share of its threads' cores each pass used (the process's CPU time), if said."""
    chosen = []
    for _ in range(passes):
        threads = choice.threads_for(tokens, prompt=prompt)
        took = seconds[threads] * tokens
        cpu = None if share is None else took * threads * share
        choice.measured(tokens, threads, took, prompt=prompt, cpu=cpu)
        chosen.append(threads)
    return chosen


def test_each_count_is_measured_first_then_the_faster_runs() -> None:
    choice = ThreadChoice(2)
    chosen = _run(choice, 2 * TRY_PASSES + 20, IDLE)
    assert chosen[: 2 * TRY_PASSES] == [2] * TRY_PASSES + [1] * TRY_PASSES
    assert set(chosen[2 * TRY_PASSES :]) == {2}


def test_a_busy_machine_turns_it_to_one_thread_and_an_idle_one_back() -> None:
    choice = ThreadChoice(2)
    _run(choice, 100, IDLE)  # two threads
    busy = _run(choice, 200, BUSY)  # a neighbour takes a core
    assert busy[TRY_PASSES : TRY_PASSES + 10].count(1) >= 10 - TRY_PASSES  # within a few passes
    assert busy[-100:].count(2) <= TRY_PASSES  # two threads only tried, now and then
    idle = _run(choice, int(LAST_TRY / IDLE[1]) + 60, IDLE)
    assert idle[-40:].count(2) >= 40 - TRY_PASSES  # one thread only tried


def test_one_slow_pass_decides_nothing() -> None:
    """The first pass on two threads after one wakes a thread that slept: slow, every time."""
    choice = ThreadChoice(2)
    _run(choice, 40, BUSY)
    chosen: list[int] = []
    for _ in range(int(LAST_TRY / IDLE[1]) + 60):  # idle again
        threads = choice.threads_for(1)
        woken = threads == 2 and chosen[-1:] == [1]
        choice.measured(1, threads, 0.050 if woken else IDLE[threads])
        chosen.append(threads)
    assert chosen[-40:].count(2) >= 40 - TRY_PASSES  # two threads, but for one try of one


@pytest.mark.parametrize("tokens", [1, 8])
def test_tries_of_the_slower_count_cost_a_fiftieth_or_wait_the_longest(tokens: int) -> None:
    choice = ThreadChoice(2)
    _run(choice, 2 * TRY_PASSES, BUSY, tokens)  # each measured
    chosen = _run(choice, 20_000, BUSY, tokens)
    assert chosen.count(2) >= 2 * TRY_PASSES  # tried again, more than once
    total = sum(BUSY[threads] * tokens for threads in chosen)
    lost = chosen.count(2) * (BUSY[2] - BUSY[1]) * tokens
    cost = TRY_PASSES * (BUSY[2] - BUSY[1]) * tokens  # of one try
    wait = min(cost / TRY_SHARE, LAST_TRY)  # 1 token: 2.4 s; 8 tokens: the cap
    assert lost / total == pytest.approx(cost / (wait + TRY_PASSES * BUSY[2] * tokens), rel=0.05)


def test_time_between_requests_does_not_bring_a_try() -> None:
    """The passes after each pause run on the faster count: tries come after time spent in
    passes, not after time."""
    choice = ThreadChoice(2)
    faster_on_two = {2: 0.001, 1: 0.002}
    _run(choice, 2 * TRY_PASSES, faster_on_two, tokens=16)  # both measured
    chosen = []
    for _ in range(20):  # a pause, then a request's three passes
        chosen += _run(choice, 3, faster_on_two, tokens=16)
    assert chosen == [2] * len(chosen)


def test_sizes_of_pass_are_chosen_apart() -> None:
    """Single tokens can lose on two threads where passes of a dozen gain."""
    choice = ThreadChoice(2)
    _run(choice, 50, BUSY, tokens=1)
    dozen = _run(choice, 50, {2: 0.001, 1: 0.002}, tokens=12)
    single = _run(choice, 20, BUSY, tokens=1)
    assert dozen[-20:] == [2] * 20
    assert single.count(1) >= 20 - TRY_PASSES


@pytest.mark.parametrize("tokens", [1, 20, 128])
@pytest.mark.parametrize(("machine", "expected"), [(IDLE, 2), (BUSY, 1)])
def test_a_prompts_passes_follow_the_size_measured_last(
    machine: dict[int, float], expected: int, tokens: int
) -> None:
    """Never a try of their own, whatever their size (they are too few: a try held whole
    prompts on the slower count) or their own times; all threads before anything is
    measured."""
    choice = ThreadChoice(2)
    assert _run(choice, 3, {2: 0.002, 1: 0.001}, tokens, prompt=True) == [2, 2, 2]
    _run(choice, 100, machine, tokens=8)  # the replies' passes: the most measured
    _run(choice, 20, machine, tokens=1)
    prompts = _run(choice, 30, {2: 0.002, 1: 0.001}, tokens, prompt=True)
    assert prompts == [expected] * 30


def test_a_large_pass_of_replies_is_measured_and_tried() -> None:
    """Replies' passes of any size (prompt lookup's guesses make them large) are measured:
    the faster count runs them, not the count the other sizes found."""
    choice = ThreadChoice(2)
    _run(choice, 100, BUSY, tokens=1)  # single tokens: one thread
    large = _run(choice, 2 * TRY_PASSES + 20, {2: 0.001, 1: 0.002}, tokens=64)
    assert large[: 2 * TRY_PASSES] == [2] * TRY_PASSES + [1] * TRY_PASSES
    assert set(large[2 * TRY_PASSES :]) == {2}


def test_a_prompt_after_a_busy_spell_follows_the_passes_that_saw_it_end() -> None:
    """The replies' 8-token passes last ran beside the busy process; single tokens since found
    the cores free: a prompt now runs on all threads."""
    choice = ThreadChoice(2)
    _run(choice, 2000, BUSY, tokens=8)  # the most passes, on one thread
    _run(choice, int(LAST_TRY / IDLE[1]) + 60, IDLE, tokens=1)  # back on two
    assert _run(choice, 3, {2: 0.001, 1: 0.002}, tokens=128, prompt=True) == [2, 2, 2]


class Idle:
    """A made-up count of the machine's idle cores."""

    def __init__(self, cores: float) -> None:
        self.cores = cores

    def __call__(self) -> float | None:
        return self.cores


def test_idle_cores_bring_two_threads_back_at_once() -> None:
    idle = Idle(0.0)
    choice = ThreadChoice(2, idle)
    _run(choice, 100, BUSY)  # on one thread: the neighbour holds the other core
    assert _run(choice, 50, BUSY)[-40:] == [1] * 40  # no idle core, no try
    idle.cores = 1.0  # the neighbour stopped
    back = _run(choice, 20, IDLE)
    assert back[:TRY_PASSES] == [2] * TRY_PASSES  # tried at once (the wait was seconds)
    assert back[TRY_PASSES:] == [2] * (20 - TRY_PASSES)


def test_idle_cores_that_do_not_help_bring_one_early_try_per_wait() -> None:
    """Cores that look idle but do not make two threads faster (a CPU quota, another core's
    siblings) cost at most one try more per wait."""
    choice = ThreadChoice(2, Idle(2.0))
    _run(choice, 2 * TRY_PASSES, BUSY)
    chosen = _run(choice, 20_000, BUSY)
    without = ThreadChoice(2)
    _run(without, 2 * TRY_PASSES, BUSY)
    assert chosen.count(2) <= 2 * _run(without, 20_000, BUSY).count(2) + TRY_PASSES


def test_idle_cores_are_read_from_the_kernels_counts(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    now = [0.0]
    cores = IdleCores(stat, lambda: now[0])
    assert not cores.available()  # no file: nothing known
    stat.write_text("cpu  100 0 50 1000 20 0 0 0 0 0\ncpu0 ...\n")
    assert cores.available()
    assert cores.since_last() is None  # a first reading
    now[0] += MIN_WINDOW / 2
    assert cores.since_last() is None  # too soon to mean anything
    now[0] += MIN_WINDOW / 2 + MIN_WINDOW
    ticks = os.sysconf("SC_CLK_TCK")
    stat.write_text(f"cpu  200 0 60 {1000 + round(1.5 * ticks * now[0])} 20 0\n")
    assert cores.since_last() == pytest.approx(1.5, rel=0.05)
    now[0] += MAX_WINDOW + 1  # a reading too old to say how the cores are now
    assert cores.since_last() is None


def test_passes_that_have_their_cores_try_one_thread_only_after_the_longest_wait() -> None:
    """With the machine to itself (the passes on both threads use both cores), a try of one
    thread comes once per ``LAST_TRY`` of time in passes, not after fifty times its cost."""
    seconds = int(60 / IDLE[2])  # a minute of passes
    quiet = ThreadChoice(2)
    chosen = _run(quiet, seconds, IDLE, share=1.0)
    unknown = ThreadChoice(2)  # no CPU time said: tries as often as their cost allows
    without = _run(unknown, seconds, IDLE)
    tries = (chosen.count(1) - TRY_PASSES) / TRY_PASSES  # after the first measurement
    assert tries == pytest.approx(60 / LAST_TRY, abs=1.5)
    assert chosen.count(1) * 5 < without.count(1)


def test_passes_that_lose_their_cores_end_the_longest_wait() -> None:
    """A neighbour starts during the long wait: within ``SHARE_PASSES`` passes a try of one
    thread comes, and one thread then runs; a few passes without their cores (a virtual
    machine's host taking a core for a moment) do not bring one."""
    choice = ThreadChoice(2)
    _run(choice, 200, IDLE, share=1.0)  # measured both, then waiting the longest
    blip = SHARE_PASSES // 2 - 1
    assert _run(choice, blip, IDLE, share=0.7) == [2] * blip
    assert _run(choice, SHARE_PASSES, IDLE, share=1.0) == [2] * SHARE_PASSES
    # Beside a busy process: the threads wait for each other (BUSY) and use less of their cores.
    # Passes a little slower than one thread's old time still leave two threads the faster
    # count by its measurements: only the try finds out.
    losing = {2: IDLE[1] * 0.95, 1: IDLE[1] * 0.6}
    chosen = _run(choice, SHARE_PASSES + 2 * TRY_PASSES, losing, share=HAD_CORES - 0.2)
    assert 1 in chosen[: SHARE_PASSES // 2 + 2]
    assert chosen[-TRY_PASSES:] == [1] * TRY_PASSES


def test_a_neighbour_that_came_and_went_during_the_longest_wait_leaves_no_long_wait() -> None:
    """The neighbour slows both threads past one thread's time, so one thread runs without a
    try; once it stops, both threads are back within the usual wait, not the 8 s that the quiet
    machine had earned (benchmark thread_recovery: whole idle rounds stayed on one thread)."""
    idle = Idle(0.0)
    choice = ThreadChoice(2, idle)
    _run(choice, 200, IDLE, share=1.0)  # both measured, then waiting the longest
    busy = _run(choice, 100, BUSY, share=0.6)
    assert busy[-50:].count(1) >= 50 - TRY_PASSES  # on one thread
    idle.cores = 1.0  # the neighbour stopped: the core it held sits idle
    back = _run(choice, int(1.0 / IDLE[1]), IDLE, share=1.0)  # a second of passes
    assert back[:TRY_PASSES] == [2] * TRY_PASSES  # tried at once
    assert back[-20:] == [2] * 20


def test_one_thread_has_nothing_to_choose() -> None:
    assert set(_run(ThreadChoice(1), 50, {1: 0.01})) == {1}
