"""How many threads run the next forward pass, chosen by how fast each count has been
(``thread_wait="auto"``).

llama.cpp's threads meet at a barrier after every operation of a pass. With the cores free,
two threads that spin there are fastest; as soon as another process wants a core, a thread
spins through the time slice of the thread it waits for, and one thread, which has no barrier,
is two to three times faster (measured on SmolLM2, 2 cores: 114 against 67 tokens/s at one
stream on the idle machine, 36 against 71 beside one busy process). Which case holds changes
while the server runs, so the engine measures it: each size of pass keeps how long a token took
on one thread and on all, runs the faster, and now and then tries the other again for a few
passes. A try costs what the slower count loses over its passes, so the next comes after fifty
times that much time spent in passes of that size, a quarter of a second at least and 8 s at
most; time between requests does not count. Tries take about 2 % of the work (more where the
cap cuts the wait: a server that has gone back to one thread must find out soon enough that the
cores are free again), and a request after a pause does not begin with one. Where the machine
says how many of its cores sat idle (``IdleCores``), a server on one thread tries all again as
soon as enough of them did, once per wait: it then follows a neighbour that stops as quickly as
one that starts.

One thread wins only when the threads do not have their cores (another process, a CPU quota,
the hypervisor takes them), and the process's own CPU time says whether they had them: passes
on all threads that used nearly all their threads' cores (``HAD_CORES``) mean nothing took
them, so after a try of one thread that lost, the next waits the longest (``LAST_TRY``) instead
of fifty times the try's cost; as soon as the passes stop having their cores, or one thread
turns faster without a try (a neighbour slowed both), that wait ends. Tries go on, rarely, for
what no count of CPU time shows (two threads on one core's hyperthreads). SmolLM2 on 2 idle
cores, 1 stream, in-process: 1.2 % of the passes on one thread instead of 3.8 % (each size of
pass is still measured once at first), 1.1 % more tokens/s.

A pass that holds prompt tokens comes a few times per request, too seldom to try counts of its
own: it takes the count that the size of pass measured last runs faster (the machine's state
now, which the passes of the replies measure all the time), and all threads before any is
measured. Only the replies' passes are measured and tried.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: The share of the time in passes that tries may cost, and the time in passes (of one size
#: class) between two tries, at least and at most. At most 8 s: after a busy spell two threads
#: beat one by half again on an idle machine, and a wait of 24 s (a hundred times a try's cost
#: at 8 streams, at a 1 % share) kept a whole 8-stream request on one thread in benchmark 11.
TRY_SHARE = 0.02
FIRST_TRY = 0.25
LAST_TRY = 8.0
#: Passes in one try, and the recent passes whose median is a count's time: the first pass
#: after a switch wakes threads that slept, and any pass may meet a hiccup of the machine, so
#: no single pass decides (a change that lasts does, within a few passes).
TRY_PASSES = 3
RECENT_PASSES = 5
#: Idle cores, for each thread beyond the first, that make a server on one thread try all at once.
IDLE_ENOUGH = 0.75
#: The share of its threads' cores (the process's CPU time over the pass's time, per thread) in
#: the median of the recent passes on all threads, at which those threads had their cores.
#: Measured on 2 cores (SmolLM2, 1 stream): 0.87-1.1 with the machine to itself (0.87-0.9 when
#: the server's HTTP side and its client run beside the engine's process), 0.56-0.77 beside one
#: busy-loop process. Read over the last ``SHARE_PASSES`` passes: a virtual machine's host takes
#: a core for a few passes now and then (three in a row at 0.77 on an idle machine), which one
#: thread would not beat; a neighbour that stays shows within half of them.
HAD_CORES = 0.8
SHARE_PASSES = 16
# Why prompt passes follow rather than being measured by size: tried apart, a prompt's passes
# (two or three per 8 requests that arrive together) spent whole requests in a try of the
# slower count: benchmark 11 had the first token at 8 streams at 1.03-1.76x llama-server's by
# repetition (at 041a39d), 0.75-1.84x and 0.997x in the median once passes of 32 tokens and
# more followed; a 1-stream request's prompt pass (20-25 tokens once its system prompt is
# cached) still had a size class of its own, one pass per request, so a try of one thread held
# three requests' first token (148 and 190 ms against 77-95 ms on both threads, ad hoc). Always
# all threads is no answer: beside a busy process one thread computes a prompt faster (ad hoc
# rounds: 1.73 s against 1.24 s at 8 streams).


@dataclass
class _PassSize:
    """The recent times per token of one size class of pass, on one thread and on all."""

    recent: dict[int, deque[float]] = field(default_factory=dict)
    until_try: float = 0.0
    trying: int | None = None
    idle_may_try: bool = False
    """Idle cores may end the wait early: once per wait after a try of all threads that they
    did not bring."""
    idle_tried: bool = False
    """The try under way was brought by idle cores."""
    quiet_wait: bool = False
    """The wait is the longest because the passes on all threads had their cores: it ends once
    they stop having them."""

    def seconds(self, threads: int) -> float:
        return statistics.median(self.recent[threads])

    def unmeasured(self, counts: tuple[int, ...]) -> int | None:
        """The first of ``counts`` with no time yet (one whose first try is under way has
        none); None once every count has one."""
        return next((count for count in counts if not self.recent.get(count)), None)


class ThreadChoice:
    """Which of ``1`` and ``threads`` runs a pass of ``tokens`` tokens (``threads_for``), from
    the times ``measured`` gives it. Used by one thread (the scheduler's) only."""

    def __init__(self, threads: int, idle_cores: Callable[[], float | None] | None = None) -> None:
        self.counts = (threads, 1) if threads > 1 else (1,)
        self._idle_cores = idle_cores
        self._sizes: dict[int, _PassSize] = {}
        self._last: _PassSize | None = None
        """The size of pass measured last, which the prompt passes follow."""
        self._shares: deque[float] = deque(maxlen=SHARE_PASSES)
        """The share of their cores the recent passes on all threads used."""

    def threads_for(self, tokens: int, *, prompt: bool = False) -> int:
        """``prompt``: the pass holds prompt tokens (it follows, see the module's docstring)."""
        if len(self.counts) == 1:
            return 1
        if prompt:
            return self._followed()
        size = self._size(tokens)
        if size.trying is None:
            if (unmeasured := size.unmeasured(self.counts)) is not None:
                self._try(size, unmeasured)
            else:
                best = min(self.counts, key=size.seconds)
                if size.until_try > 0 and not self._wait_ends(size, best):
                    return best
                self._try(size, next(count for count in self.counts if count != best))
        assert size.trying is not None
        return size.trying

    def measured(
        self,
        tokens: int,
        threads: int,
        seconds: float,
        *,
        prompt: bool = False,
        cpu: float | None = None,
    ) -> None:
        """A pass of ``tokens`` tokens took ``seconds`` on ``threads`` threads (a pass holding
        prompt tokens is not measured); ``cpu``: the CPU seconds the process used meanwhile."""
        if len(self.counts) == 1 or prompt:
            return
        if cpu is not None and threads == self.counts[0] and seconds > 0:
            self._shares.append(cpu / (seconds * threads))
        size = self._size(tokens)
        per_token = seconds / max(tokens, 1)
        size.recent[threads].append(per_token)
        self._last = size
        if size.trying != threads:
            size.until_try -= seconds
            return
        if len(size.recent[threads]) < TRY_PASSES:
            return
        size.trying = None
        others = [size.seconds(count) for count in size.recent if count != threads]
        best_other = min(others, default=per_token)
        cost = max(size.seconds(threads) - best_other, 0.0) * tokens * TRY_PASSES
        size.until_try = min(max(cost / TRY_SHARE, FIRST_TRY), LAST_TRY)
        size.idle_may_try, size.idle_tried = threads > 1 and not size.idle_tried, False
        size.quiet_wait = cost > 0 and threads != self.counts[0] and self._had_cores()
        if size.quiet_wait:
            size.until_try = LAST_TRY

    def _followed(self) -> int:
        """The faster count of the size of pass measured last (its first try done); all
        threads before that. The last, not the most used: after a busy spell, the replies'
        8-token passes would still say one thread while single tokens found the cores free."""
        last = self._last
        if last is None or last.unmeasured(self.counts) is not None:
            return self.counts[0]
        return min(self.counts, key=last.seconds)

    def _wait_ends(self, size: _PassSize, best: int) -> bool:
        """Whether what the machine says ends the wait for the next try of ``size`` early: idle
        cores on one thread, cores lost on all."""
        if best == 1:
            if size.quiet_wait:
                # One thread turned faster without a try (a neighbour slowed both threads): the
                # longest wait was for a machine nobody else used; the next try of all threads
                # comes as soon as after any try, and idle cores may bring it sooner.
                size.quiet_wait = False
                size.until_try = min(size.until_try, FIRST_TRY)
            return self._cores_freed(size)
        return self._cores_taken(size)

    def _cores_taken(self, size: _PassSize) -> bool:
        """Whether the passes on all threads stopped having their cores during a wait that
        is the longest because they had them (ending it, once)."""
        if not size.quiet_wait or self._had_cores():
            return False
        size.quiet_wait = False
        return True

    def _had_cores(self) -> bool:
        """Whether the recent passes on all threads used their cores in full (the median of
        ``SHARE_PASSES``: one pass that woke a sleeping thread says nothing)."""
        shares = self._shares
        return len(shares) == shares.maxlen and statistics.median(shares) >= HAD_CORES

    def _cores_freed(self, size: _PassSize) -> bool:
        """Whether the cores the other threads need sat idle lately (spending the wait's one
        early try)."""
        if not size.idle_may_try or self._idle_cores is None:
            return False
        idle = self._idle_cores()
        if idle is None or idle < IDLE_ENOUGH * (self.counts[0] - 1):
            return False
        size.idle_may_try, size.idle_tried = False, True
        return True

    @staticmethod
    def _try(size: _PassSize, threads: int) -> None:
        size.trying = threads
        size.recent[threads] = deque(maxlen=RECENT_PASSES)  # its old times are stale

    def _size(self, tokens: int) -> _PassSize:
        key = max(tokens, 1).bit_length()  # 1, 2-3, 4-7, 8-15, 16-31 tokens
        if (size := self._sizes.get(key)) is None:
            size = self._sizes[key] = _PassSize()
        return size
