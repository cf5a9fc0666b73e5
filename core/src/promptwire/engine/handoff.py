"""Events handed off: taken straight from a worker engine's thread, a forward pass at a time,
by a consumer that has no event loop to wake (the engine process, which sends them to the
server's socket). ``WorkerEngine.hand_off`` sets the consumer, ``WorkerEngine.generate_to``
starts a request this way; the worker flushes the ``Handoff`` after every step, and a backend
before each forward pass (``BatchWorker._send_events``), so a pass's tokens never wait for the
next one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from promptwire.engine._contract import EngineError, EngineEvent, Finish, RequestLimits

if TYPE_CHECKING:
    from promptwire.engine.worker import BatchWorker, EventChannel

Delivery = list[tuple[Hashable, EngineEvent | EngineError]]


class Handoff:
    """Where handed-off requests' events go from the worker thread, a forward pass at a time:
    ``deliver`` gets everything one pass made for them, each event with its request's key.

    In the engine process this saves every token three wake-ups on its way to the server's
    socket (the courier's, and the event loop's twice: for the event, then for the timer that
    gathered a pass's events): the worker sends the pass's events itself, before the next pass. Four
    runs of benchmark 11 against two before: about 2 % more tokens/s at one stream and 6 % at
    eight (BENCHMARKS.md, section 11)."""

    def __init__(self, deliver: Callable[[Delivery], None]) -> None:
        self._deliver = deliver
        self._pending: Delivery = []

    def put(self, key: Hashable, item: EngineEvent | EngineError) -> None:
        self._pending.append((key, item))

    def flush(self) -> None:
        """From the worker thread: before a forward pass and after each step."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._deliver(batch)


class HandedOff:
    """A request generating with its events handed off (``WorkerEngine.generate_to``): its
    limits applied in the worker thread (``RequestLimits``), ended by a ``Finish`` or an
    ``EngineError``; nothing more of it goes out once cancelled."""

    def __init__(
        self,
        worker: BatchWorker[Any],
        job: EventChannel,
        key: Hashable,
        limits: RequestLimits,
        handoff: Handoff,
    ) -> None:
        self._worker, self._job, self._key = worker, job, key
        self._limits, self._handoff = limits, handoff
        self._ended = False
        job.direct = self._put

    def start(self) -> None:
        """Submit the request (raises what ``BatchWorker.submit`` raises)."""
        self._worker.submit(self._job)

    def cancel(self) -> None:
        self._ended = True
        self._worker.cancel(self._job)

    def _put(self, item: EngineEvent | EngineError) -> None:
        """In the worker thread: ``item`` through the limits to the hand-off."""
        if self._ended:
            return
        key, handoff, limits = self._key, self._handoff, self._limits
        if isinstance(item, EngineError):
            self._ended = True
            handoff.put(key, item)
            return
        if (passed := limits.feed(item)) is not None:
            handoff.put(key, passed)
        if limits.done:
            self._ended = True
            for event in limits.closing():
                handoff.put(key, event)
            if not isinstance(item, Finish):  # a stop sequence or max_tokens: free its place
                self._worker.cancel(self._job)


__all__ = ["Delivery", "HandedOff", "Handoff"]
