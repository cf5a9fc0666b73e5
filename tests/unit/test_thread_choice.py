"""``thread_wait="auto"``'s choice of threads for each forward pass, driven by made-up pass
times: the faster count wins, a change of speed is followed, and a count that keeps losing is
tried more and more rarely."""

from __future__ import annotations

import itertools

import pytest

from tests.support.optional import LLAMACPP_PLUGIN_MISSING

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.thread_choice import FIRST_TRY, LAST_TRY, TRY_PASSES, ThreadChoice


def _run(
    choice: ThreadChoice, passes: int, seconds: dict[int, float], tokens: int = 1
) -> list[int]:
    """``passes`` passes of ``tokens`` tokens, each taking what ``seconds`` says for its count
    of threads; the counts chosen."""
    chosen = []
    for _ in range(passes):
        threads = choice.threads_for(tokens)
        choice.measured(tokens, threads, seconds[threads] * tokens)
        chosen.append(threads)
    return chosen


def test_each_count_is_measured_first_then_the_faster_runs() -> None:
    choice = ThreadChoice(2)
    chosen = _run(choice, 2 * TRY_PASSES + FIRST_TRY - 1, {2: 0.009, 1: 0.014})
    assert chosen[: 2 * TRY_PASSES] == [2] * TRY_PASSES + [1] * TRY_PASSES
    assert set(chosen[2 * TRY_PASSES :]) == {2}


def test_a_busy_machine_turns_it_to_one_thread_and_an_idle_one_back() -> None:
    choice = ThreadChoice(2)
    _run(choice, 100, {2: 0.009, 1: 0.014})  # idle: two threads
    busy = _run(choice, 200, {2: 0.030, 1: 0.014})  # a neighbour takes a core
    assert busy[TRY_PASSES : TRY_PASSES + 10].count(1) >= 10 - TRY_PASSES  # within a few passes
    assert busy[-100:].count(2) <= TRY_PASSES  # two threads only tried, now and then
    idle = _run(choice, LAST_TRY + 50, {2: 0.009, 1: 0.014})
    assert idle[-40:] == [2] * 40


def test_one_slow_pass_in_a_try_does_not_decide_it() -> None:
    """The first pass of a try wakes threads that slept: its time is not the count's."""
    choice = ThreadChoice(2)
    _run(choice, 40, {2: 0.030, 1: 0.014})  # busy: one thread, two tried again after 16
    chosen = []
    for _ in range(LAST_TRY + 20):  # idle again, each try's first pass slow
        threads = choice.threads_for(1)
        first_of_try = threads == 2 and (not chosen or chosen[-1] == 1)
        choice.measured(1, threads, 0.050 if first_of_try else {2: 0.009, 1: 0.014}[threads])
        chosen.append(threads)
    assert chosen[-40:].count(2) >= 40 - TRY_PASSES  # two threads, but for one try of one


def test_a_losing_count_is_tried_more_rarely_up_to_a_limit() -> None:
    choice = ThreadChoice(2)
    chosen = _run(choice, 4000, {2: 0.030, 1: 0.014})
    starts = [i for i in range(1, len(chosen)) if chosen[i] == 2 and chosen[i - 1] == 1]
    assert all(chosen[i : i + TRY_PASSES] == [2] * TRY_PASSES for i in starts[:-1])
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == sorted(gaps)  # each loss doubles the wait
    # A try starts at the interval's last pass, then takes TRY_PASSES passes.
    assert gaps[0] == 2 * FIRST_TRY + TRY_PASSES - 1
    assert max(gaps) == LAST_TRY + TRY_PASSES - 1


def test_sizes_of_pass_are_chosen_apart() -> None:
    """A prompt's large pass can gain from two threads while single tokens do not."""
    choice = ThreadChoice(2)
    _run(choice, 50, {2: 0.030, 1: 0.014}, tokens=1)
    large = _run(choice, 50, {2: 0.001, 1: 0.002}, tokens=128)
    single = _run(choice, 20, {2: 0.030, 1: 0.014}, tokens=1)
    assert large[-20:].count(2) >= 20 - TRY_PASSES
    assert single.count(1) >= 20 - TRY_PASSES


def test_one_thread_has_nothing_to_choose() -> None:
    choice = ThreadChoice(1)
    assert set(_run(choice, 50, {1: 0.01})) == {1}
