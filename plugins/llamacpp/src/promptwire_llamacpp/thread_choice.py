"""How many threads run the next forward pass, chosen by how fast each count has been
(``thread_wait="auto"``).

llama.cpp's threads meet at a barrier after every operation of a pass. With the cores free,
two threads that spin there are fastest; as soon as another process wants a core, a thread
spins through the time slice of the thread it waits for, and one thread, which has no barrier,
is two to three times faster (measured on SmolLM2, 2 cores: 114 against 67 tokens/s at one
stream on the idle machine, 36 against 71 beside one busy process). Which case holds changes
while the server runs, so the engine measures it: each size of pass keeps how long a token took
on one thread and on all, runs the faster, and now and then tries the other again for a few
passes: a quarter of a second after the last try at first, twice as long each time it loses,
four seconds at most (a machine that stays busy pays about 1 % for the tries; one that becomes
idle again gets its threads back within seconds, whatever the size of its passes).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: Seconds between two tries of the count not in use (in one size class), at first and at most,
#: and the passes of the count in use between them, at least: a prompt's few large passes, which
#: set its first token's time, then rarely meet a try (they would whenever a server has been idle
#: for longer than the interval: every request after a pause).
FIRST_TRY = 0.25
LAST_TRY = 4.0
PASSES_BETWEEN_TRIES = 16
#: Passes in one try, and the recent passes whose median is a count's time: the first pass
#: after a switch wakes threads that slept, and any pass may meet a hiccup of the machine, so
#: no single pass decides (a change that lasts does, within a few passes).
TRY_PASSES = 3
RECENT_PASSES = 5


@dataclass
class _PassSize:
    """The recent times per token of one size class of pass, on one thread and on all."""

    recent: dict[int, deque[float]] = field(default_factory=dict)
    next_try: float = 0.0
    interval: float = FIRST_TRY
    since_try: int = 0
    trying: int | None = None

    def seconds(self, threads: int) -> float:
        return statistics.median(self.recent[threads])


class ThreadChoice:
    """Which of ``1`` and ``threads`` runs a pass of ``tokens`` tokens (``threads_for``), from
    the times ``measured`` gives it. Used by one thread (the scheduler's) only."""

    def __init__(self, threads: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts = (threads, 1) if threads > 1 else (1,)
        self._clock = clock
        self._sizes: dict[int, _PassSize] = {}

    def threads_for(self, tokens: int) -> int:
        if len(self.counts) == 1:
            return 1
        size = self._size(tokens)
        if size.trying is None:
            unmeasured = [count for count in self.counts if count not in size.recent]
            if unmeasured:
                self._try(size, unmeasured[0])
            else:
                best = min(self.counts, key=size.seconds)
                size.since_try += 1
                if size.since_try <= PASSES_BETWEEN_TRIES or self._clock() < size.next_try:
                    return best
                self._try(size, next(count for count in self.counts if count != best))
        assert size.trying is not None
        return size.trying

    def measured(self, tokens: int, threads: int, seconds: float) -> None:
        """A pass of ``tokens`` tokens took ``seconds`` on ``threads`` threads."""
        if len(self.counts) == 1:
            return
        size = self._size(tokens)
        size.recent[threads].append(seconds / max(tokens, 1))
        if size.trying != threads or len(size.recent[threads]) < TRY_PASSES:
            return
        size.trying, size.since_try = None, 0
        others = [size.seconds(count) for count in size.recent if count != threads]
        lost = bool(others) and size.seconds(threads) > min(others)
        size.interval = min(size.interval * 2, LAST_TRY) if lost else FIRST_TRY
        size.next_try = self._clock() + size.interval

    @staticmethod
    def _try(size: _PassSize, threads: int) -> None:
        size.trying = threads
        size.recent[threads] = deque(maxlen=RECENT_PASSES)  # its old times are stale

    def _size(self, tokens: int) -> _PassSize:
        key = min(max(tokens, 1).bit_length(), 6)  # 1, 2-3, 4-7, 8-15, 16-31, 32+ tokens
        if (size := self._sizes.get(key)) is None:
            size = self._sizes[key] = _PassSize()
        return size
