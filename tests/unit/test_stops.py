"""Stop sequences on whole text and across streamed pieces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from promptwire.stops import StopScanner, truncate_at_stop


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


# -- the same answers as the obvious quadratic scan, on every input -----------------------------


def _reference_truncate(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _reference_scan(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    """Each piece: cut at the earliest stop in held text + piece, else hold back the longest
    tail that begins a stop."""
    held, out, stops = "", [], [s for s in stops if s]
    for piece in pieces:
        buffer = held + piece
        before, found = _reference_truncate(buffer, stops)
        if found:
            return [*out, before], True
        keep = max(
            (
                n
                for s in stops
                for n in range(1, min(len(s), len(buffer) + 1))
                if buffer.endswith(s[:n])
            ),
            default=0,
        )
        held = buffer[len(buffer) - keep :]
        out.append(buffer[: len(buffer) - keep])
    return [*out, held], False


_small = st.text("ab\n-]^\\", max_size=6)


@settings(max_examples=2000, deadline=None)
@given(
    stops=st.lists(_small, max_size=5),
    pieces=st.lists(st.text("ab\n-]^\\", max_size=12), max_size=8),
)
def test_the_automaton_answers_as_the_quadratic_scan_did(
    stops: list[str], pieces: list[str]
) -> None:
    assert truncate_at_stop("".join(pieces), stops) == _reference_truncate("".join(pieces), stops)
    scanner = StopScanner(stops)
    emitted = []
    for piece in pieces:
        emitted.append(scanner.feed(piece))
        if scanner.stopped:
            break
    emitted.append(scanner.flush())
    expected, stopped = _reference_scan(pieces, stops)
    assert "".join(emitted) == "".join(expected)
    assert scanner.stopped == stopped
