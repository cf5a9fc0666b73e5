"""A deadline for what one task awaits, costing nothing when the awaited thing is already there.

The server bounds a request's body and each write of a stream in time. Most bodies have arrived
whole with their request, and most writes go straight into the socket's buffer: neither waits.
A timer for each (``asyncio.timeout``, anyio's ``move_on_after``, even a bare ``call_at``) is
set up and torn down for nothing, on every request and every streamed token. ``Deadline``
instead asks the loop to set its timer on its next turn, which comes only if the task waits;
the deadline still counts from when it was made.
"""

from __future__ import annotations

import asyncio


class Deadline:
    """Cancels the current task ``seconds`` from now, if it is still waiting then.

    >>> deadline = Deadline(5.0)
    >>> try:
    ...     await something()
    ... except asyncio.CancelledError:
    ...     if not deadline.caught():
    ...         raise  # cancelled for another reason
    ...     ...  # the deadline passed
    ... finally:
    ...     deadline.cancel()
    """

    __slots__ = ("_arming", "_at", "_loop", "_task", "_timer", "expired")

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a deadline is for a task"
        self._task = task
        self._at = self._loop.time() + seconds
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False
        # Runs only once this task has given the loop a turn, i.e. is waiting.
        self._arming = self._loop.call_soon(self._arm)

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self._at, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def caught(self) -> bool:
        """After a ``CancelledError``: whether this deadline alone cancelled the task (its
        cancellation is then taken back), not something else too."""
        return self.expired and self._task.uncancel() == 0

    def cancel(self) -> None:
        """The awaited thing is done (or failed): no timer any more."""
        self._arming.cancel()
        if self._timer is not None:
            self._timer.cancel()
