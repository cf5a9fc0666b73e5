"""Stop sequences applied to whole and streamed text (by engines, and by the client as a guard).

Matching is linear in the text, whatever the stop list: the stops are compiled into one
Aho-Corasick automaton and each character is read once (plus failure steps, which over a whole
text never outnumber its characters). Retrying every prefix of every stop after each streamed
piece cost, for the 32 stops of 256 characters the protocol allows, thousands of comparisons per
piece: enough for one request to hold a server's event loop for seconds.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence


class _Automaton:
    """The stops as an Aho-Corasick automaton; immutable once built. A state is a node of the
    stops' trie: the longest suffix of the text read so far that begins some stop."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.goto: list[dict[str, int]] = [{}]
        self.fail = [0]
        self.depth = [0]  # the length of the state's text
        self.match = [0]  # the length of the longest stop that ends at this state, or 0
        for stop in stops:
            state = 0
            for char in stop:
                child = self.goto[state].get(char)
                if child is None:
                    child = self.goto[state][char] = len(self.goto)
                    self.goto.append({})
                    self.fail.append(0)
                    self.depth.append(self.depth[state] + 1)
                    self.match.append(0)
                state = child
            self.match[state] = len(stop)
        queue = deque(self.goto[0].values())  # breadth first: a state's fail target comes first
        while queue:
            state = queue.popleft()
            for char, child in self.goto[state].items():
                target = self.fail[state]
                while target and char not in self.goto[target]:
                    target = self.fail[target]
                self.fail[child] = self.goto[target].get(char, 0)
                self.match[child] = self.match[child] or self.match[self.fail[child]]
                queue.append(child)
        self.longest = max(map(len, stops))
        # Outside any stop, jump to the next character that can begin one (at C speed).
        self.starts = re.compile("[" + "".join(re.escape(c) for c in sorted(self.goto[0])) + "]")

    def scan(self, text: str, state: int, offset: int) -> tuple[int, int]:
        """Read ``text`` from ``state``, ``offset`` characters of held text behind it. Return
        where the earliest stop begins, counted from the start of the held text (-1 if none is
        complete), and the state after the text."""
        goto, fail, match, starts = self.goto, self.fail, self.match, self.starts
        earliest = -1
        end = len(text)
        position = 0
        while position < end:
            if not state:
                found = starts.search(text, position, end)
                if found is None:
                    break
                position = found.start()
            char = text[position]
            while state and char not in goto[state]:
                state = fail[state]
            state = goto[state].get(char, 0)
            if match[state]:
                begins = offset + position + 1 - match[state]
                if earliest < 0 or begins < earliest:
                    earliest = begins
                    # A stop that ends later can begin earlier only within one stop's length.
                    end = min(end, earliest + self.longest - 1 - offset)
            position += 1
        return earliest, state


def truncate_at_stop(text: str, stops: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop sequence; say whether one was found."""
    scanner = StopScanner(stops)
    before = scanner.feed(text)
    return (before, True) if scanner.stopped else (text, False)


class StopScanner:
    """Finds the first stop sequence across streamed pieces.

    Text that could be the start of a stop sequence is held back until the next piece shows
    whether it is, so no part of a stop sequence is ever emitted. Use it as::

        scanner = StopScanner(request.stop)
        for piece in pieces:
            yield scanner.feed(piece)  # may be "" while text is held back
            if scanner.stopped:        # a stop sequence was found: end with finish "stop"
                break
        yield scanner.flush()          # what was held, when no stop sequence came

    ``stopped`` turns True on the ``feed`` that finds a stop sequence (``matched`` is then that
    sequence); from then on ``feed`` and ``flush`` return "".
    """

    def __init__(self, stops: Sequence[str] | None) -> None:
        kept = tuple(s for s in stops or () if s)
        self._automaton = _Automaton(kept) if kept else None  # 32 stops of 256: ~6 ms
        self._state = 0  # its text is exactly the held text
        self._held = ""
        self._stops = kept
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Return the part of ``text`` (plus held text) that is safe to emit now."""
        automaton = self._automaton
        if self.stopped:
            return ""
        if automaton is None:
            return text
        earliest, self._state = automaton.scan(text, self._state, len(self._held))
        buffer = self._held + text
        if earliest >= 0:
            self.stopped = True
            self._held = ""
            # The earliest stop; of those beginning there, the shortest is the one that ended it.
            self.matched = min(
                (s for s in self._stops if buffer.startswith(s, earliest)), key=len, default=None
            )
            return buffer[:earliest]
        keep = automaton.depth[self._state]  # what may yet become a stop is held back
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held text, once the stream has ended without a stop sequence."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


__all__ = [
    "StopScanner",
    "truncate_at_stop",
]
