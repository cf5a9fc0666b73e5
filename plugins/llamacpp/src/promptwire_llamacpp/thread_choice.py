"""How many threads run the next forward pass, chosen by how fast each count has been
(``thread_wait="auto"``).

llama.cpp's threads meet at a barrier after every operation of a pass. With the cores free,
two threads that spin there are fastest; as soon as another process wants a core, a thread
spins through the time slice of the thread it waits for, and one thread, which has no barrier,
is two to three times faster (measured on SmolLM2, 2 cores: 114 against 67 tokens/s at one
stream on the idle machine, 36 against 71 beside one busy process). Which case holds changes
while the server runs, so the engine measures it: each size of pass keeps how long a token took
on one thread and on all, runs the faster, and now and then tries the other again (more rarely
each time it loses, so a machine that stays busy pays almost nothing for the checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Passes of one size class between two tries of the count not in use, at first and at most.
FIRST_TRY = 16
LAST_TRY = 512
#: Weight of a new measurement in the running time of the count in use.
SMOOTHING = 0.25


@dataclass
class _PassSize:
    """The times per token of one size class of pass, on one thread and on all."""

    seconds: dict[int, float] = field(default_factory=dict)
    since_try: int = 0
    interval: int = FIRST_TRY
    trying: int | None = None


class ThreadChoice:
    """Which of ``1`` and ``threads`` runs a pass of ``tokens`` tokens (``threads_for``), from
    the times ``measured`` gives it. Used by one thread (the scheduler's) only."""

    def __init__(self, threads: int) -> None:
        self.counts = (threads, 1) if threads > 1 else (1,)
        self._sizes: dict[int, _PassSize] = {}

    def threads_for(self, tokens: int) -> int:
        if len(self.counts) == 1:
            return 1
        size = self._size(tokens)
        unmeasured = [count for count in self.counts if count not in size.seconds]
        if unmeasured:
            size.trying = unmeasured[0]
            return unmeasured[0]
        best = min(self.counts, key=size.seconds.__getitem__)
        size.since_try += 1
        if size.since_try >= size.interval:
            size.since_try = 0
            size.trying = next(count for count in self.counts if count != best)
            return size.trying
        return best

    def measured(self, tokens: int, threads: int, seconds: float) -> None:
        """A pass of ``tokens`` tokens took ``seconds`` on ``threads`` threads."""
        size = self._size(tokens)
        per_token = seconds / max(tokens, 1)
        if size.trying == threads:  # a try: its time stands for the count from now on
            size.trying = None
            size.seconds[threads] = per_token
            others = [t for count, t in size.seconds.items() if count != threads]
            lost = bool(others) and per_token > min(others)
            size.interval = min(size.interval * 2, LAST_TRY) if lost else FIRST_TRY
        elif threads in size.seconds:
            size.seconds[threads] += SMOOTHING * (per_token - size.seconds[threads])
        else:
            size.seconds[threads] = per_token

    def _size(self, tokens: int) -> _PassSize:
        key = max(tokens, 1).bit_length()  # 1, 2-3, 4-7, 8-15, ... tokens
        if (size := self._sizes.get(key)) is None:
            size = self._sizes[key] = _PassSize()
        return size
