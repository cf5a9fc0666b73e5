"""Stop sequences on whole text and across streamed pieces (the automaton against the quadratic
scan on thousands of generated inputs: tests/properties/test_stop_automaton.py)."""

from __future__ import annotations

import pytest
from promptwire.protocol.stops import StopScanner, truncate_at_stop


def test_truncate_cuts_at_the_earliest_stop() -> None:
    assert truncate_at_stop("a b\nc END d", ["END", "\n"]) == ("a b", True)
    assert truncate_at_stop("abc", ["x"]) == ("abc", False)
    assert truncate_at_stop("abc", None) == ("abc", False)


def _scan(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    scanner = StopScanner(stops)
    out = [scanner.feed(p) for p in pieces]
    out.append(scanner.flush())
    return [o for o in out if o], scanner.stopped


def test_a_stop_split_across_pieces_is_never_emitted() -> None:
    emitted, stopped = _scan(["hello wor", "ld ST", "OP and more"], ["STOP"])
    assert "".join(emitted) == "hello world "
    assert stopped


def test_a_false_start_is_released_when_the_next_piece_disproves_it() -> None:
    emitted, stopped = _scan(["ab S", "Tx", "yz"], ["STOP"])
    assert "".join(emitted) == "ab STxyz"
    assert not stopped


@pytest.mark.parametrize("cut", range(1, 12))
def test_any_split_gives_the_same_text_as_whole(cut: int) -> None:
    text = "one two\n\nthree four"
    emitted, _ = _scan([text[:cut], text[cut:]], ["\n\n", "four"])
    assert "".join(emitted) == truncate_at_stop(text, ["\n\n", "four"])[0]


def test_without_stops_everything_passes_through() -> None:
    assert _scan(["a", "b"], []) == (["a", "b"], False)


def test_the_scanner_says_which_stop_ended_the_text() -> None:
    scanner = StopScanner(["zzz", "END", "EN"])
    assert scanner.matched is None
    assert scanner.feed("one E") == "one "
    assert scanner.feed("ND two") == ""
    assert scanner.stopped and scanner.matched == "EN"  # the earliest, the shortest there
    other = StopScanner(["yz", "xy"])
    other.feed("axyz")
    assert other.matched == "xy"


async def test_generate_and_complete_carry_the_stop_sequence() -> None:
    from collections.abc import AsyncGenerator

    from promptwire.engine import Engine, EngineEvent, TextChunk
    from promptwire.protocol import PromptRequest

    class Words(Engine):
        async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
            for word in ("alpha ", "beta ", "gamma"):
                yield TextChunk(word)

    done = await Words().complete(PromptRequest(prompt="p", stop=["x", "beta"]))
    assert (done.text, done.finish_reason, done.stop_sequence) == ("alpha ", "stop", "beta")
    natural = await Words().complete(PromptRequest(prompt="p", stop=["x"]))
    assert (natural.finish_reason, natural.stop_sequence) == ("stop", None)
