"""The stop-sequence automaton gives the same answers as the obvious quadratic scan, on every
input hypothesis generates (2,000 cases: seconds, so apart from the unit tests)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from promptwire.protocol.stops import StopScanner, truncate_at_stop


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
