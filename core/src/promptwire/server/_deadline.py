"""Deadlines for what a task awaits, costing next to nothing when the awaited thing is
already there.

The server bounds a request's body and each write of a stream in time. Most bodies have arrived
whole with their request, and most writes go straight into the socket's buffer: neither waits.
A timer for each (``asyncio.timeout``, anyio's ``move_on_after``, even a bare ``call_at``) is
set up and torn down for nothing, on every request and every streamed token. ``Deadline`` (the
body) instead asks the loop to set its timer on its next turn, which comes only if the task
waits; the deadline still counts from when it was made. ``SendWatch`` (a stream's writes) has
one timer for the whole stream, and a write only notes when it began.
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


class SendWatch:
    """A deadline for each write of one stream, with at most one timer for the whole stream.

    A stream writes once a token, and almost every write goes straight into the socket's
    buffer; a ``Deadline`` each still makes and cancels a loop callback (about 130 bytecodes a
    token). Here a write only notes which task began it and when; the one timer, set by the
    first write, looks at the writes then in flight when the oldest would be due, cancels the
    task of each that is, and sets itself again for the next one due. sse-starlette writes
    from more than one task (the data, the pings), so each task's write is watched apart.

    >>> token = watch.begin()
    >>> try:
    ...     await send(message)
    ... except asyncio.CancelledError:
    ...     if not watch.caught(token):
    ...         raise  # cancelled for another reason
    ...     ...  # the write waited too long
    ... finally:
    ...     watch.end(token)
    """

    __slots__ = ("_expired", "_loop", "_seconds", "_timer", "_writing")

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._writing: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> asyncio.Task[object]:
        """The current task begins a write; what ``caught`` and ``end`` take."""
        task = asyncio.current_task()
        assert task is not None, "a write is watched in a task"
        began = self._writing[task] = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(began + self._seconds, self._look)
        return task

    def end(self, task: asyncio.Task[object]) -> None:
        """The write is done (or failed)."""
        self._writing.pop(task, None)

    def caught(self, task: asyncio.Task[object]) -> bool:
        """After a ``CancelledError`` in ``task``'s write: whether this watch alone cancelled
        it (its cancellation is then taken back), not something else too."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def close(self) -> None:
        """The stream is over: no timer any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        self._timer = None
        now = self._loop.time()
        next_due: float | None = None
        for task, began in self._writing.items():
            due = began + self._seconds
            if due <= now:
                if task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None:
            self._timer = self._loop.call_at(next_due, self._look)
