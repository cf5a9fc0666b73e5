"""``thread_wait="auto"``'s choice of threads for each forward pass, driven by made-up pass
times: the faster count wins, a change of speed is followed, and a count that keeps losing is
tried more and more rarely."""

from __future__ import annotations

import itertools

import pytest

from tests.support.optional import LLAMACPP_PLUGIN_MISSING

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.thread_choice import FIRST_TRY, LAST_TRY, ThreadChoice


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
    chosen = _run(choice, 2 + FIRST_TRY - 1, {2: 0.009, 1: 0.014})
    assert chosen[:2] == [2, 1]
    assert set(chosen[2:]) == {2}


def test_a_busy_machine_turns_it_to_one_thread_and_an_idle_one_back() -> None:
    choice = ThreadChoice(2)
    _run(choice, 100, {2: 0.009, 1: 0.014})  # idle: two threads
    busy = _run(choice, 200, {2: 0.030, 1: 0.014})  # a neighbour takes a core
    assert busy[:10].count(1) >= 5  # followed within a few passes
    assert busy[-100:].count(2) <= 2  # two threads only tried, now and then
    idle = _run(choice, 2 * LAST_TRY + 50, {2: 0.009, 1: 0.014})
    assert idle[-50:] == [2] * 50


def test_a_losing_count_is_tried_more_rarely_up_to_a_limit() -> None:
    choice = ThreadChoice(2)
    chosen = _run(choice, 4000, {2: 0.030, 1: 0.014})
    tries = [index for index, threads in enumerate(chosen) if threads == 2][1:]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert gaps == sorted(gaps)  # each loss doubles the wait
    assert gaps[0] <= 2 * FIRST_TRY
    assert max(gaps) == LAST_TRY


def test_sizes_of_pass_are_chosen_apart() -> None:
    """A prompt's large pass can gain from two threads while single tokens do not."""
    choice = ThreadChoice(2)
    _run(choice, 50, {2: 0.030, 1: 0.014}, tokens=1)
    large = _run(choice, 50, {2: 0.001, 1: 0.002}, tokens=128)
    single = _run(choice, 20, {2: 0.030, 1: 0.014}, tokens=1)
    assert large[-20:].count(2) >= 19
    assert single.count(1) >= 19


def test_one_thread_has_nothing_to_choose() -> None:
    choice = ThreadChoice(1)
    assert set(_run(choice, 50, {1: 0.01})) == {1}
