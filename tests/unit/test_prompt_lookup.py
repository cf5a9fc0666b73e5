"""Prompt lookup's guesses (``promptwire_llamacpp.lookup``): what followed the last earlier
place of the history's last three tokens, in the prompt or the reply; nothing when they stood
nowhere before, and never the run it is looking up."""

from __future__ import annotations

import pytest

from tests.support.optional import LLAMACPP_PLUGIN_MISSING

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.lookup import PromptLookup


def test_a_guess_is_what_followed_the_last_run_where_it_stood_before() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 7, 2, 3, 4])
    assert lookup.guess(3) == [5, 6, 7]
    assert lookup.guess(10) == [5, 6, 7, 2, 3, 4]  # up to the end of the history
    assert lookup.guess(1) == [5]


def test_the_reply_is_looked_up_too_and_the_latest_place_wins() -> None:
    lookup = PromptLookup([8, 1, 2, 3, 9])
    for token in (1, 2, 3, 7, 1, 2, 3):  # the reply: "1 2 3" stood last before "7"
        lookup.append(token)
    assert lookup.guess(2) == [7, 1]


@pytest.mark.parametrize("history", [[], [1, 2], [1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 1, 2, 3]])
def test_no_guess_for_a_run_that_stood_nowhere_before(history: list[int]) -> None:
    assert PromptLookup(history).guess(4) == []


def test_a_repeated_token_guesses_itself() -> None:
    assert PromptLookup([9, 9, 9, 9]).guess(2) == [9]
