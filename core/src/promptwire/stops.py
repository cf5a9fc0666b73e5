"""Stop sequences applied to whole and streamed text (by engines, and by the client as a guard)."""

from __future__ import annotations

from collections.abc import Sequence


def truncate_at_stop(text: str, stops: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop sequence; say whether one was found."""
    cut = min((i for s in stops or () if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopScanner:
    """Finds the first stop sequence across streamed pieces.

    Text that could be the start of a stop sequence is held back until the next piece shows
    whether it is, so no part of a stop sequence is ever emitted.
    """

    def __init__(self, stops: Sequence[str] | None) -> None:
        self._stops = [s for s in stops or () if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the part of ``text`` (plus held text) that is safe to emit now."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        before, found = truncate_at_stop(buffer, self._stops)
        if found:
            self.stopped = True
            self._held = ""
            return before
        keep = self._longest_partial_stop(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held text, once the stream has ended without a stop sequence."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_stop(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
