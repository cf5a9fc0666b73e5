"""The worker-thread skeleton of a batching engine: one thread owns the model's batch.

A model library's batch (llama.cpp's context, ExLlamaV2's dynamic generator) is not thread-safe
and its forward pass blocks, so exactly one thread drives it. Requests are submitted from any
thread into an inbox; the worker takes them at its next step, runs every request in flight in
the same forward pass, and hands events back to each request's event loop (``EventChannel``).
Stopping fails what is in flight with a 503; a worker that dies fails everyone with a 500 and
refuses new work, never silently. A backend keeps only its batch policy: what "busy" means, how a
request joins and leaves, and what one step does. A pass that fails only its own requests (the
backend answers them and goes on) is counted, and ``FAILED_PASSES_IN_A_ROW`` of them with none
succeeding between stop the worker as if it had died: an error that every pass meets (a GPU
left in a failed state) would otherwise fail every request while the engine says it is ready.

A consumer with no event loop in the way (the engine process, whose events go to the server's
socket) can take a request's events straight from the worker thread instead
(``WorkerEngine.generate_to``, ``promptwire.engine.handoff``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, Callable, Hashable, Iterable
from typing import Any, Generic, Literal, Protocol, TypeVar

from promptwire.engine._contract import (
    Engine,
    EngineError,
    EngineEvent,
    EngineNotReady,
    Finish,
    PreparedT,
    RequestLimits,
)
from promptwire.engine.handoff import Delivery, HandedOff, Handoff
from promptwire.protocol import PromptRequest, Usage

logger = logging.getLogger(__name__)

#: How long ``stop`` waits for the worker thread to end.
STOP_JOIN_TIMEOUT = 30.0
#: Failed passes in a row, none succeeding between, after which a worker stops as out of order
#: (``BatchWorker._pass_failed``). One request that makes a pass fail leaves with that pass, and
#: the next pass succeeds.
FAILED_PASSES_IN_A_ROW = 3


class _PassesFailing(Exception):
    """Raised in the worker thread when passes keep failing; its message is the reason the
    worker stopped (``BatchWorker.broken``)."""


class EventChannel:
    """One request's way back from the worker thread: to its event loop (made on the loop), or,
    handed off, to ``direct``, called in the worker thread (``WorkerEngine.generate_to``)."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[EngineEvent | EngineError]
    direct: Callable[[EngineEvent | EngineError], None] | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.queue = asyncio.Queue()

    def put(self, item: EngineEvent | EngineError) -> None:
        """From the worker thread: handed to the courier, which wakes the loop (see
        ``_Courier``), or to ``direct``; in the order put."""
        if (direct := self.direct) is not None:
            direct(item)
        else:
            _courier().send(self, item)

    def deliver(self, item: EngineEvent | EngineError) -> None:
        """From the courier thread; nobody listens any more once the loop has closed."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class _Courier:
    """The thread that wakes the requests' event loops with their events, so the worker thread
    never waits for them.

    Waking a loop from another thread writes to its socket, which lets go of the GIL; the loop
    takes it and handles the event (a token's text on its way to the client) while the thread
    that woke it waits to get the GIL back. Done by the worker, that wait came before every
    forward pass: 190 us of a 9.7 ms step at one stream (SmolLM2 on 2 cores, in-process). The
    worker hands events over here without letting go of the GIL (``SimpleQueue.put``); this
    thread wakes the loops while the worker's next pass runs in native code, the GIL free."""

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[tuple[EventChannel, EngineEvent | EngineError]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name="promptwire-courier", daemon=True).start()

    def send(self, channel: EventChannel, item: EngineEvent | EngineError) -> None:
        self._items.put((channel, item))

    def _run(self) -> None:
        while True:
            channel, item = self._items.get()
            channel.deliver(item)
            # Nothing of the last request stays referenced here while the next is awaited
            # (its channel holds its job: the engine's cache pages, gigabytes on a GPU).
            del channel, item


_the_courier: _Courier | None = None
_courier_lock = threading.Lock()


def _courier() -> _Courier:
    """The process's courier, started at its first event."""
    global _the_courier
    if _the_courier is None:
        with _courier_lock:
            if _the_courier is None:
                _the_courier = _Courier()
    return _the_courier


def _forget_courier() -> None:
    """In a forked child: the parent's courier thread is not there; the first event starts one."""
    global _the_courier, _courier_lock
    _the_courier, _courier_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_courier)


RequestT = TypeVar("RequestT", bound=EventChannel)
Command = tuple[Literal["submit", "cancel"], RequestT]


class BatchWorker(ABC, Generic[RequestT]):
    """See the module. Subclasses implement the batch policy (the methods marked abstract);
    everything a request goes through between threads is here."""

    def __init__(self, *, name: str) -> None:
        self._cond = threading.Condition()
        self._inbox: deque[Command[RequestT]] = deque()
        self._stopping = False
        self._broken: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.failures = 0
        """Forward passes that failed, failing the requests in them."""
        self._failed_in_a_row = 0
        self.handoff: Handoff | None = None
        """Where handed-off requests' events go (``WorkerEngine.hand_off``)."""

    # -- any thread ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Fail what is in flight (503) and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_JOIN_TIMEOUT)

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive() and not self._stopping and self._broken is None

    @property
    def broken(self) -> str | None:
        """What ended the thread with an error, or None: the class name of the exception, or
        of the one its passes kept failing on ("RuntimeError in 3 passes in a row"). Only the
        name: the message may quote a request, and this reaches every client (the log has it
        whole)."""
        return self._broken

    def submit(self, request: RequestT) -> None:
        """Queue ``request``; its events arrive on its channel. Refused with a 503 once the
        worker has stopped on an error, as the server refuses requests then (an engine in its
        own process is being replaced: a retry finds the new one)."""
        with self._cond:
            if self._broken is not None:
                raise EngineNotReady(f"the engine is out of order ({self._broken})", retry_after=1)
            if self._stopping or not self._thread.is_alive():
                raise EngineNotReady("the engine is not running", retry_after=1)
            self._admit_locked(request)
            self._inbox.append(("submit", request))
            self._cond.notify()

    def cancel(self, request: RequestT) -> None:
        """Stop ``request`` (no-op once it has finished), freeing what it holds."""
        with self._cond:
            self._inbox.append(("cancel", request))
            self._cond.notify()

    def _admit_locked(self, request: RequestT) -> None:
        """Called under the lock before ``request`` is queued: raise ``EngineOverloaded`` to
        refuse it (a full queue)."""

    # -- the worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
            while True:
                with self._cond:
                    while not self._inbox and not self._stopping and not self._busy():
                        self._cond.wait()
                    commands = list(self._inbox)
                    self._inbox.clear()
                    stopping = self._stopping
                if stopping:
                    self._shut_down(commands)
                    return
                for command, request in commands:
                    if command == "submit":
                        self._accept(request)
                    else:
                        self._cancel(request)
                self._step()
                self._send_events()
        except BaseException as exc:  # never die silently: fail everyone, refuse new work
            logger.exception("%s stopped", self._thread.name)
            failing = isinstance(exc, _PassesFailing)
            self.failures += not failing  # a failing pass counted itself
            with self._cond:
                self._broken = str(exc) if failing else type(exc).__name__
                leftover = _submitted(self._inbox)
                self._inbox.clear()
            for request in [*leftover, *self._take_all()]:
                request.put(EngineError("the engine stopped unexpectedly"))
        finally:
            self._send_events()  # what stopping or failing told them
            self._close()

    def _shut_down(self, commands: Iterable[Command[RequestT]]) -> None:
        for request in [*_submitted(commands), *self._release_all()]:
            request.put(EngineNotReady("the server is shutting down", retry_after=1))

    def _send_events(self) -> None:
        """In the worker thread: hand what the requests handed off have got so far to their
        consumer now, not after the step (``_run`` does then). A backend calls it before a
        forward pass, so the tokens sampled from the last one go out while this one runs."""
        if (handoff := self.handoff) is not None:
            handoff.flush()

    def _pass_failed(self, error: str) -> None:
        """In the worker thread, once a backend has answered the requests of a pass that failed
        on ``error`` (an exception's class name, say) and goes on: counted, and the
        ``FAILED_PASSES_IN_A_ROW``-th failure in a row stops the worker (``_PassesFailing``)."""
        self.failures += 1
        self._failed_in_a_row += 1
        if self._failed_in_a_row >= FAILED_PASSES_IN_A_ROW:
            raise _PassesFailing(f"{error} in {self._failed_in_a_row} passes in a row")

    def _pass_succeeded(self) -> None:
        """In the worker thread, after a pass that worked: failures in a row start again."""
        self._failed_in_a_row = 0

    def _open(self) -> None:
        """In the worker thread, before its first step."""

    def _close(self) -> None:
        """In the worker thread, as it ends (after a failed ``_open`` too)."""

    def _release_all(self) -> list[RequestT]:
        """On shutdown: every request in flight, forgotten, with what it held given back."""
        return self._take_all()

    @abstractmethod
    def _busy(self) -> bool:
        """Work is in flight: step again without waiting for a command."""

    @abstractmethod
    def _accept(self, request: RequestT) -> None:
        """``request`` joins (at once or in line)."""

    @abstractmethod
    def _cancel(self, request: RequestT) -> None:
        """``request`` leaves, if it has not finished."""

    @abstractmethod
    def _step(self) -> None:
        """One forward pass over what is in flight, its events handed out."""

    @abstractmethod
    def _take_all(self) -> list[RequestT]:
        """Every request in flight or in line, forgotten (the caller tells them why)."""


class Runtime(Protocol):
    """A loaded model, as ``WorkerEngine`` needs it: something to close."""

    def close(self) -> None: ...


RuntimeT = TypeVar("RuntimeT", bound=Runtime)
WorkerT = TypeVar("WorkerT", bound=BatchWorker[Any])


class WorkerEngine(Engine[PreparedT], Generic[RuntimeT, WorkerT, PreparedT]):
    """An engine whose loaded model (``_runtime``) one ``BatchWorker`` (``_worker``) drives: the
    life cycle such engines share. ``load`` (the backend's: load the model, start the worker,
    under ``_lock``) runs in a thread on ``start``; ``stop`` stops the worker (a 503 to what is in
    flight), then closes the model; the engine is ready while its worker is healthy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runtime: RuntimeT | None = None
        self._worker: WorkerT | None = None

    @abstractmethod
    def load(self) -> None:
        """Load the model and start the worker; a no-op once running."""

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    async def stop(self) -> None:
        await asyncio.to_thread(self.unload)

    def unload(self) -> None:
        with self._lock:
            worker, runtime = self._worker, self._runtime
            self._worker = self._runtime = None
        if worker is not None:
            worker.stop()
        if runtime is not None:
            runtime.close()

    @property
    def ready(self) -> bool:
        worker = self._worker
        return worker is not None and worker.healthy

    @property
    def out_of_order(self) -> str | None:
        worker = self._worker
        if worker is None or (broken := worker.broken) is None:
            return None
        return f"its worker stopped on {broken}"

    @property
    def not_ready_reason(self) -> str:
        if (reason := self.out_of_order) is not None:
            return f"the engine is out of order ({reason}); restart the server"
        return super().not_ready_reason

    def _require_runtime(self) -> RuntimeT:
        """The loaded model, or a 503 that says to retry while it is not."""
        if self._runtime is None or not self.ready:
            raise EngineNotReady("the model is not loaded", retry_after=1)
        return self._runtime

    def hand_off(self, deliver: Callable[[Delivery], None]) -> None:
        """From now on, ``generate_to``'s requests go to ``deliver`` (see ``Handoff``); once
        started."""
        worker = self._worker
        if worker is None:
            raise EngineNotReady("the model is not loaded", retry_after=1)
        worker.handoff = Handoff(deliver)

    def generate_to(
        self, request: PromptRequest, prepared: PreparedT, key: Hashable
    ) -> HandedOff | None:
        """``generate``'s events for ``request``, handed off under ``key`` (``hand_off``), not
        yet started; None when this engine or this request needs ``generate`` (an event loop
        between the worker and the events: reading tool calls). None here: an engine that can
        hand a request off builds its job and calls ``_hand_off_job``."""
        return None

    def _hand_off_job(
        self, job: EventChannel, request: PromptRequest, key: Hashable, prompt_tokens: int
    ) -> HandedOff | None:
        worker = self._worker
        if worker is None or (handoff := worker.handoff) is None:
            return None

        def usage(completion_tokens: int) -> Usage:
            return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

        return HandedOff(worker, job, key, RequestLimits(request, usage), handoff)

    async def _run_on_worker(self, request: EventChannel) -> AsyncGenerator[EngineEvent, None]:
        """Submit ``request`` (the worker's request type) and pass its events on until its
        ``Finish``; closed early (the client left, a stop string, ``max_tokens``), it cancels
        the request on the worker."""
        worker = self._worker
        if worker is None:
            raise EngineNotReady("the model is not loaded", retry_after=1)
        worker.submit(request)
        finished = False
        try:
            while True:
                item = await request.queue.get()
                if isinstance(item, EngineError):
                    finished = True
                    raise item
                finished = isinstance(item, Finish)
                yield item
                if finished:
                    return
        finally:
            if not finished:
                worker.cancel(request)


def _submitted(commands: Iterable[Command[RequestT]]) -> list[RequestT]:
    return [request for command, request in commands if command == "submit"]


__all__ = [
    "STOP_JOIN_TIMEOUT",
    "BatchWorker",
    "EventChannel",
    "Runtime",
    "WorkerEngine",
]
