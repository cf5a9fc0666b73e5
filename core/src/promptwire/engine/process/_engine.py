"""``ProcessEngine``: any backend's engine run in a child process, behind the same contract.

The server talks to it as to any engine. Calls the server makes in its worker threads
(``render_chat``, ``prepare``, ``count_prompt_tokens``) go to the child and wait for its reply
there; a generation is one message out and batches of events back, read by the event loop as
they arrive (no thread to wake: every message there is handled in one wake-up). What the server
reads on the event loop (``ready``, ``capabilities``, ``metrics``, ``model_name``) is what the
child last reported, never a round trip.

If the child dies, every call and generation in flight ends with ``EngineProcessDied`` (a 500
naming the signal or exit code), ``/health`` answers 503 "engine restarting", and the child is
started again after a backoff; after ``RestartPolicy.max_start_failures`` failed starts in a
row, it stays down and ``/health`` says why. A child whose engine reports itself out of order
(``Engine.out_of_order``: its worker stopped on an error, failing what it held) is stopped and
started again the same way. So is a child that has said nothing for
``RestartPolicy.silent_retire`` seconds (it reports every half second from its own event loop,
which native code releases while it computes): a process stopped, or hung in native code.
After ``silent_not_ready`` seconds of silence ``/health`` already answers 503 and new requests
are refused, so a load balancer sends them elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from promptwire.engine import (
    Engine,
    EngineError,
    EngineEvent,
    EngineMetric,
    EngineNotReady,
    Finish,
)
from promptwire.engine.process import _wire as wire
from promptwire.engine.process._child_handle import (
    LIVE_CHILDREN,
    READ_SIZE,
    STOP_TIMEOUT,
    EngineChild,
    EngineProcessDied,
    Generation,
    exit_status,
    launch_child,
    stop_child,
)
from promptwire.protocol import Capabilities, ChatMessage, PromptRequest, ToolSpec

logger = logging.getLogger("promptwire.engine.process")

SettingsT = TypeVar("SettingsT")

#: Seconds between two looks at how long the engine process has been silent.
SILENCE_CHECK = 1.0


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead engine process is started again."""

    first_delay: float = 0.5
    """Seconds before a restart; doubled for each death or failed start in a row that came
    within ``fast`` seconds of the last start, up to ``max_delay``."""
    max_delay: float = 30.0
    fast: float = 30.0
    max_start_failures: int = 5
    """Failed starts in a row after which the engine stays down. A death while serving is
    always followed by a restart: a request that crashes the engine must not keep it down."""
    silent_not_ready: float = 15.0
    """Seconds without a word from a started engine process (it reports every 0.5 s) after
    which it is not ready: ``/health`` answers 503 and new requests are refused."""
    silent_retire: float = 60.0
    """Seconds without a word after which it is stopped and started again, failing what it
    held, as after a crash."""


@dataclass(frozen=True)
class RemotePrepared:
    """A request prepared in the engine process: the child keeps what ``prepare`` made,
    under ``call``, until the generation asks for it (or the server forgets it)."""

    call: int
    incarnation: int
    request: PromptRequest


class ProcessEngine(Engine[RemotePrepared], Generic[SettingsT]):
    """``create_engine(settings)`` built and served in a supervised child process.

    ``create_engine`` and ``settings`` are pickled to the child, so the factory must be a
    module-level function (a backend's ``create_engine``) and the settings picklable (pydantic
    settings are); the server process keeps no native state of the engine.
    """

    def __init__(
        self,
        create_engine: Callable[[SettingsT], Engine[Any]],
        settings: SettingsT,
        *,
        model_name: str | None = None,
        restart: RestartPolicy | None = None,
    ) -> None:
        try:
            self._spec = wire.dumps((wire.SPEC, create_engine, settings))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(
                "an engine run in its own process needs a module-level factory and picklable "
                f"settings: {exc}"
            ) from None
        self.model_name = model_name
        self._restart = restart or RestartPolicy()
        self._ids = itertools.count(1)
        self._incarnations = itertools.count(1)
        self._child: EngineChild | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._restarts = 0
        self._unforgotten: dict[int, weakref.finalize[Any, Any]] = {}
        self._reason = "the model is loading"
        self._capabilities = Capabilities()
        self._reaping: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engine process and wait until its engine has started; what its start
        raised is raised here (its class and message), so a server fails to start as it would
        with the engine in-process."""
        if self._child is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        child = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(child))

    async def stop(self) -> None:
        self._stopping = True
        self._reason = "the server is stopping"
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor  # a child it was starting is stopped first
        child, self._child = self._child, None
        if child is not None:
            await asyncio.to_thread(stop_child, child)
            with contextlib.suppress(TimeoutError):  # its end read, its sockets closed
                await asyncio.wait_for(child.ended.wait(), STOP_TIMEOUT)

    @property
    def ready(self) -> bool:
        child = self._child
        return (
            child is not None
            and child.death is None
            and child.status is not None
            and child.status.ready
            and self._silence(child) < self._restart.silent_not_ready
        )

    @property
    def not_ready_reason(self) -> str:
        child = self._child
        if child is not None and child.death is None and not self._stopping:
            silence = self._silence(child)
            if silence >= self._restart.silent_not_ready:
                return (
                    f"the engine process has not answered for {silence:.0f} s (stopped, or hung "
                    "in native code)"
                )
        return self._reason

    @staticmethod
    def _silence(child: EngineChild) -> float:
        """Seconds since ``child`` last said anything."""
        return time.monotonic() - child.heard_at

    @property
    def pid(self) -> int | None:
        """The engine process's id while one is serving."""
        child = self._child
        return None if child is None else child.process.pid

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def metrics(self) -> Sequence[EngineMetric]:
        child = self._child
        restarts = EngineMetric(
            "process_restarts",
            self._restarts,
            "Times the engine's process was started again after it died.",
            kind="counter",
        )
        if child is None or child.status is None:
            return [restarts]
        return [*child.status.metrics, restarts]

    # -- calls answered by the child (the server makes them in worker threads) ----------------

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return cast(str, self._ask(lambda call: (wire.RENDER, call, list(messages), None))[0])

    def render_chat_with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> str:
        reply = self._ask(lambda call: (wire.RENDER, call, list(messages), list(tools)))
        return cast(str, reply[0])

    def count_prompt_tokens(self, request: PromptRequest) -> int:
        return cast(int, self._ask(lambda call: (wire.COUNT, call, request))[0])

    def prepare(self, request: PromptRequest) -> RemotePrepared:
        _, call, child = self._ask(lambda call: (wire.PREPARE, call, request))
        prepared = RemotePrepared(call, child.incarnation, request)
        # Prepared but never generated (the client left, a limit refused it): the child is told
        # to drop it with the next message it gets.
        self._unforgotten[call] = weakref.finalize(prepared, self._forget, child, call)
        return prepared

    def _forget(self, child: EngineChild, call: int) -> None:
        self._unforgotten.pop(call, None)
        child.forgotten.append(call)

    def _ask(self, message: Callable[[int], tuple[Any, ...]]) -> tuple[Any, int, EngineChild]:
        child = self._serving_child()
        call = next(self._ids)
        future: Future[Any] = Future()
        child.calls[call] = future
        try:
            self._send(child, message(call))
            return future.result(), call, child
        finally:
            child.calls.pop(call, None)

    # -- generations -----------------------------------------------------------------------------

    async def stream(self, prepared: RemotePrepared) -> AsyncGenerator[EngineEvent, None]:
        child = self._serving_child()
        if prepared.incarnation != child.incarnation:
            raise EngineProcessDied(
                "the engine process was restarted after this request was prepared; send it again"
            )
        if (unforgotten := self._unforgotten.pop(prepared.call, None)) is not None:
            unforgotten.detach()  # the child takes it now
        generation = Generation()
        key = next(self._ids)
        child.generations[key] = generation
        finished = False
        try:
            self._send(child, (wire.GENERATE, key, prepared.call))
            while True:
                for event in await generation.queue.get():
                    if isinstance(event, wire.Failure):
                        finished = True
                        raise event.exception()
                    if isinstance(event, EngineProcessDied):
                        finished = True
                        raise event
                    yield event
                    if isinstance(event, Finish):
                        finished = True
                        return
        except EngineNotReady:
            finished = True
            raise
        finally:
            child.generations.pop(key, None)
            if not finished and child.death is None:
                with contextlib.suppress(OSError):  # the client left, a stop or max_tokens
                    child.send((wire.CANCEL, key))

    def _deliver(self, child: EngineChild, batch: list[tuple[int, Any]]) -> None:
        """On the event loop: one batch of events, each to its generation's queue."""
        by_generation: dict[int, list[Any]] = {}
        for key, event in batch:
            by_generation.setdefault(key, []).append(event)
        for key, events in by_generation.items():
            if (generation := child.generations.get(key)) is not None:
                generation.queue.put_nowait(events)

    # -- the child process -----------------------------------------------------------------------

    def _serving_child(self) -> EngineChild:
        child = self._child
        if child is None or child.status is None or child.closed or child.death is not None:
            raise EngineNotReady(self._reason, retry_after=1)
        return child

    def _send(self, child: EngineChild, message: tuple[Any, ...]) -> None:
        """Send a request's message; a child that has gone before it got it (its end closed, or
        closing as this is sent) never saw the request: a 503 to retry, not the 500 of a
        request that may have killed it."""
        try:
            if child.closed or child.death is not None:
                raise OSError("the engine process has ended")
            child.send(message)
        except OSError:
            raise EngineNotReady(
                "the engine process ended before this request reached it; the server is "
                "restarting it",
                retry_after=1,
            ) from None

    def _died(self, child: EngineChild) -> EngineProcessDied:
        return EngineProcessDied(
            f"the engine process died ({child.death or 'connection lost'}) while serving this "
            "request; the server is restarting it"
        )

    async def _spawn(self) -> EngineChild:
        """A new child, started; raises what its engine's start raised, or that it died. A
        child being started when the server stops is stopped, not left behind."""
        launching = asyncio.ensure_future(
            asyncio.to_thread(launch_child, self._spec, next(self._incarnations))
        )
        try:
            child = await asyncio.shield(launching)
        except asyncio.CancelledError:
            child = await launching
            self._watch(child)
            await asyncio.to_thread(stop_child, child)
            raise
        self._watch(child)
        try:
            status = await asyncio.shield(asyncio.wrap_future(child.started))
        except BaseException:
            await asyncio.to_thread(stop_child, child)
            raise
        child.status = status
        self._capabilities = status.capabilities
        self.model_name = status.model_name
        self._child = child
        return child

    def _watch(self, child: EngineChild) -> None:
        """Read ``child``'s messages on the event loop as they come: no thread to wake."""
        loop = self._loop
        assert loop is not None
        child.inbox.setblocking(False)
        loop.add_reader(child.inbox.fileno(), self._on_readable, child)

    def _on_readable(self, child: EngineChild) -> None:
        try:
            data = child.inbox.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        child.heard_at = time.monotonic()
        if not data:  # the child has gone
            child.closed = True
            if child is self._child and not self._stopping:
                self._reason = "engine restarting: its process ended"
            loop = self._loop
            assert loop is not None
            loop.remove_reader(child.inbox.fileno())
            self._reaping.add(reaping := loop.create_task(self._reap(child)))
            reaping.add_done_callback(self._reaping.discard)
            return
        for message in child.received(data):
            self._handle(child, message)

    def _handle(self, child: EngineChild, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == wire.EVENTS:
            self._deliver(child, message[1])
        elif kind == wire.REPLY:
            _, call, ok, value = message
            if (future := child.calls.get(call)) is not None and not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value.exception())
        elif kind == wire.STATUS:
            child.status = status = message[1]
            if status.out_of_order is not None and child.out_of_order is None:
                self._retire(child, status.out_of_order)
        elif kind == wire.STARTED and not child.started.done():
            child.started.set_result(message[1])
        elif kind == wire.START_FAILED and not child.started.done():
            child.started.set_exception(message[1].exception())

    def _retire(self, child: EngineChild, out_of_order: str, *, kill: bool = False) -> None:
        """``child``'s engine will serve nothing more: stop the process (``kill``: at once, for
        one that cannot hear a stop); the supervisor starts another once it has ended, as after
        a crash."""
        child.out_of_order = out_of_order
        if self._stopping:
            return
        logger.error("the engine is out of order (%s); restarting its process", out_of_order)
        if child is self._child:
            self._reason = _restarting(child)
        if kill:
            with contextlib.suppress(OSError):
                child.process.kill()
            return
        loop = self._loop
        assert loop is not None
        self._reaping.add(stopping := loop.create_task(asyncio.to_thread(stop_child, child)))
        stopping.add_done_callback(self._reaping.discard)

    async def _reap(self, child: EngineChild) -> None:
        """``child`` has closed its end: wait for its exit, then fail whatever waits on it."""
        returncode = await asyncio.to_thread(exit_status, child.process)
        LIVE_CHILDREN.discard(child.process)
        child.inbox.close()
        with contextlib.suppress(OSError):
            child.connection.close()
        child.death = wire.describe_exit(returncode)
        child.failed = len(child.calls) + len(child.generations)
        died = self._died(child)
        if not child.started.done():
            child.started.set_exception(
                EngineProcessDied(f"the engine process died while starting ({child.death})")
            )
        for future in list(child.calls.values()):
            if not future.done():
                future.set_exception(died)
        if child is self._child and not self._stopping:
            self._reason = _restarting(child)
        for generation in list(child.generations.values()):
            generation.queue.put_nowait([died])
        child.ended.set()

    async def _until_ended(self, child: EngineChild) -> None:
        """Wait for ``child`` to end; stop it once it has been silent ``silent_retire`` s."""
        while not child.ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.ended.wait(), SILENCE_CHECK)
            silence = self._silence(child)
            if silence >= self._restart.silent_retire and child.out_of_order is None:
                self._retire(child, f"it has not answered for {silence:.0f} s", kill=True)

    async def _supervise(self, child: EngineChild) -> None:
        """Start the engine process again each time it dies, after a backoff that grows while
        it dies soon after each start; stay down after too many failed starts in a row."""
        policy = self._restart
        backoff = 0
        while True:
            await self._until_ended(child)
            if self._stopping:
                return
            lived = time.monotonic() - child.started_at
            backoff = backoff + 1 if lived < policy.fast else 1
            self._reason = _restarting(child)
            if child.out_of_order is None:
                logger.error(
                    "the engine process died (%s) after %.1fs; %d request(s) in flight failed",
                    child.death,
                    lived,
                    child.failed,
                )
            failed_starts = 0
            while True:
                delay = min(policy.max_delay, policy.first_delay * 2 ** (backoff - 1))
                logger.warning("restarting the engine process in %.1fs", delay)
                await asyncio.sleep(delay)
                try:
                    child = await self._spawn()
                except Exception as exc:
                    failed_starts += 1
                    backoff += 1
                    message = exc.message if isinstance(exc, EngineError) else str(exc)
                    logger.error("the engine process failed to start: %s", message)
                    if failed_starts >= policy.max_start_failures:
                        self._reason = (
                            f"engine down: it failed to start {failed_starts} times in a row; "
                            f"not restarting (last: {message})"
                        )
                        logger.error("%s", self._reason)
                        return
                    self._reason = f"engine restarting: it failed to start ({message})"
                    continue
                self._restarts += 1
                logger.info("the engine process is serving again")
                self._reason = "the model is loading"
                break


def _restarting(child: EngineChild) -> str:
    """``/health``'s reason while ``child`` is being replaced."""
    if child.out_of_order is not None:
        return f"engine restarting: it went out of order ({child.out_of_order})"
    return f"engine restarting: its process died ({child.death})"
