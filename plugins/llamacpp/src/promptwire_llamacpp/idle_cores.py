"""How many of the machine's cores sat idle lately, read from Linux's ``/proc/stat``.

``thread_wait="auto"`` runs passes on one thread while another process keeps a core busy, and
must notice when that process stops: a try of all threads costs a few slow passes each time the
cores are still taken, so tries are rare, while the kernel's count of idle time says it at
once and costs one small read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

#: The shortest time between two readings whose difference means something (the kernel counts
#: in ticks of 10 ms: ten per core), and the longest that still says how the cores are now (a
#: reading older than that starts again: a quiet hour says nothing about this second). A server
#: back on the idle machine after a busy spell ran a median of 12 passes of its next 1-stream
#: request on one thread with readings 0.1 s apart, 19 with 0.25 s, against 6 (tries) in the
#: request after (``python -m benchmarks.thread_recovery``, 3 repetitions each).
MIN_WINDOW = 0.1
MAX_WINDOW = 1.0


class IdleCores:
    """Cores idle on average between two calls of ``since_last``."""

    def __init__(
        self, stat: Path = Path("/proc/stat"), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stat = stat
        self._clock = clock
        self._ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last: tuple[float, int] | None = None

    def available(self) -> bool:
        return self._idle_ticks() is not None

    def since_last(self) -> float | None:
        """The idle cores since the last reading (None: no reading yet, or one too recent or
        too old to say)."""
        now = self._clock()
        if self._last is not None and now - self._last[0] < MIN_WINDOW:
            return None
        ticks = self._idle_ticks()
        if ticks is None:
            return None
        last, self._last = self._last, (now, ticks)
        if last is None or now - last[0] > MAX_WINDOW:
            return None
        return (ticks - last[1]) / self._ticks_per_second / (now - last[0])

    def _idle_ticks(self) -> int | None:
        """The machine's idle and I/O-wait ticks since boot (``cpu`` line: user nice system
        idle iowait ...)."""
        try:
            with self._stat.open("rb") as stat:
                fields = stat.readline().split()
            return int(fields[4]) + int(fields[5])
        except (OSError, ValueError, IndexError):
            return None
