"""The engine process: builds the engine the server names and serves it over a socket pair.

Started by ``ProcessEngine`` as ``python -c`` with the server's ``sys.path`` (so it imports
whatever the server imports, wherever it runs), it reads the engine's factory and settings,
starts the engine, then answers calls (render, prepare, count) from a few worker threads, which
the reader thread hands them to straight. A generation's events go to the server in batches:
from the engine's worker thread after each forward pass where the engine hands them off
(``WorkerEngine.generate_to``), from its own event loop otherwise. When the server goes (its end
of the connection closes, even if it was killed), the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, cast

from promptwire.engine import Engine, EngineError, Finish
from promptwire.engine.handoff import Delivery, HandedOff
from promptwire.engine.process import _wire as wire
from promptwire.engine.worker import WorkerEngine

logger = logging.getLogger("promptwire.engine.process")

#: Calls (render, prepare, count) run at once; the server's own preparer sends at most 4.
CALL_THREADS = 4
#: Seconds events wait to be sent with those that follow them (a token takes 10s of ms).
FLUSH_DELAY = 0.0005
#: Seconds the engine gets to stop once the server has gone.
ORPHAN_GRACE = 10.0


def main(inbox: int, outbox: int, log_level: int = logging.INFO) -> None:
    """The engine process's entry point: read the server's messages from the socket ``inbox``,
    write ours to ``outbox``, until told to stop; log at the server's ``log_level``."""
    # Ctrl-C and SIGTERM are the server's: systemd, ``timeout`` and ``kill -TERM -PGID`` signal
    # the whole process group, and the server stops us once its streams have had their grace
    # period (``stop_child``; after it is gone, our own orphan check).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level, format="%(levelname)s:     [engine %(process)d] %(message)s"
    )
    reading, writing = Connection(inbox), Connection(outbox)
    _tag, create_engine, settings = wire.loads(reading.recv_bytes())
    sys.exit(_event_loop_runner()(_serve(reading, writing, create_engine, settings)))


def _event_loop_runner() -> Callable[[Any], int]:
    """uvloop's ``run`` where it is installed (as uvicorn's ``auto`` picks it for the server):
    every generated event passes through this loop; asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return cast(Callable[[Any], int], uvloop.run)


async def _serve(
    reading: Connection, writing: Connection, create_engine: Any, settings: Any
) -> int:
    return await _Child(reading, writing).run(create_engine, settings)


class _Child:
    def __init__(self, reading: Connection, writing: Connection) -> None:
        self._reading, self._writing = reading, writing
        self._send_lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._calls = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="promptwire-engine")
        self._prepared: dict[int, tuple[Any, Any]] = {}  # call -> (request, prepared)
        self._generations: dict[int, asyncio.Task[None]] = {}
        self._handed_off: dict[Hashable, HandedOff] = {}  # by the reader thread and the engine's
        self._outbox: list[tuple[int, Any]] = []
        self._stopping = asyncio.Event()
        self._engine: Engine[Any] | None = None

    async def run(self, create_engine: Callable[[Any], Engine[Any]], settings: Any) -> int:
        try:
            engine = create_engine(settings)
            await engine.start()
        except BaseException as exc:  # told to the server, which says it in one line
            self._send((wire.START_FAILED, wire.Failure.of(exc)))
            return 1
        self._engine = engine
        if isinstance(engine, WorkerEngine):
            engine.hand_off(self._send_handed_off)
        # What start-up left alive (the model's vocabulary, templates, modules) out of the cyclic
        # collector's reach, as the server does with its own heap: otherwise every full
        # collection rescans it while the engine's threads wait for the GIL.
        gc.collect()
        gc.freeze()
        self._send((wire.STARTED, self._status()))
        threading.Thread(target=self._read, name="promptwire-engine-reader", daemon=True).start()
        reporter = asyncio.create_task(self._report())
        await self._stopping.wait()
        reporter.cancel()
        for task in list(self._generations.values()):
            task.cancel()
        await engine.stop()
        return 0

    # -- reading (a thread of its own: a slow engine step never delays the next message) ---------

    def _read(self) -> None:
        engine = self._engine
        assert engine is not None
        while True:
            try:
                message = wire.loads(self._reading.recv_bytes())
            except (EOFError, OSError):
                break
            kind = message[0]
            # Calls go straight to a worker thread, which sends the reply: no hop through the
            # event loop, which the generations keep busy.
            if kind == wire.PREPARE:
                _, call, request = message
                self._call(call, self._prepare, engine, call, request)
            elif kind == wire.RENDER:
                _, call, messages, tools = message
                if tools is None:
                    self._call(call, engine.render_chat, messages)
                else:
                    self._call(call, engine.render_chat_with_tools, messages, tools)
            elif kind == wire.COUNT:
                self._call(message[1], engine.count_prompt_tokens, message[2])
            elif kind == wire.FORGET:
                for call in message[1]:
                    self._prepared.pop(call, None)
            elif kind == wire.GENERATE:
                self._start(engine, message[1], message[2])
            elif kind == wire.CANCEL and (handed := self._handed_off.pop(message[1], None)):
                handed.cancel()
            else:
                self._loop.call_soon_threadsafe(self._dispatch, message)
                if kind == wire.STOP:
                    return
        # The server has gone without a word (killed): stop, and do not outlive it for long.
        self._loop.call_soon_threadsafe(self._stopping.set)
        threading.Timer(ORPHAN_GRACE, os._exit, (0,)).start()

    def _start(self, engine: Engine[Any], generation: int, call: int) -> None:
        """From the reader thread: the generation handed off where the engine can, on the event
        loop otherwise."""
        if (kept := self._prepared.pop(call, None)) is None:
            self._fail(generation, EngineError("the request was not prepared"))
            return
        request, prepared = kept
        try:
            handed = (
                engine.generate_to(request, prepared, generation)
                if isinstance(engine, WorkerEngine)
                else None
            )
            if handed is None:
                self._loop.call_soon_threadsafe(
                    self._generate_on_loop, generation, request, prepared
                )
                return
            self._handed_off[generation] = handed  # before it starts: its end removes it
            handed.start()
        except Exception as exc:  # refused (a full queue, a stopped engine), or a bug
            self._handed_off.pop(generation, None)
            self._fail(generation, exc)

    def _fail(self, generation: int, exc: Exception) -> None:
        self._send((wire.EVENTS, [(generation, _failure(exc))]))

    def _send_handed_off(self, batch: Delivery) -> None:
        """From the engine's worker thread: one forward pass's events of the handed-off
        generations, in one message."""
        events: list[tuple[Hashable, Any]] = []
        for generation, item in batch:
            event = wire.Failure.of(item) if isinstance(item, EngineError) else item
            if isinstance(event, Finish | wire.Failure):  # its last event
                self._handed_off.pop(generation, None)
            events.append((generation, event))
        self._send((wire.EVENTS, events))

    def _generate_on_loop(self, generation: int, request: Any, prepared: Any) -> None:
        engine = self._engine
        assert engine is not None
        task = self._loop.create_task(self._generate(engine, generation, request, prepared))
        self._generations[generation] = task

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        """On the event loop: cancel a generation, or stop."""
        kind = message[0]
        if kind == wire.CANCEL:
            if (running := self._generations.pop(message[1], None)) is not None:
                running.cancel()
        elif kind == wire.STOP:
            self._stopping.set()

    def _prepare(self, engine: Engine[Any], call: int, request: Any) -> None:
        self._prepared[call] = (request, engine.prepare(request))  # thread-safe: one item set

    def _call(self, call: int, work: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                result = work(*args)
            except Exception as exc:
                self._send((wire.REPLY, call, False, _failure(exc)))
            else:
                self._send((wire.REPLY, call, True, result))

        self._calls.submit(run)

    # -- generating ------------------------------------------------------------------------------

    async def _generate(
        self, engine: Engine[Any], generation: int, request: Any, prepared: Any
    ) -> None:
        """The engine's ``generate`` (the request's limits applied here, where its tokens are),
        every event posted for the next batch."""
        try:
            async with contextlib.aclosing(engine.generate(request, prepared)) as events:
                async for event in events:
                    self._post(generation, event)
        except asyncio.CancelledError:
            return  # the server cancelled it: it wants no more events
        except Exception as exc:
            self._post(generation, _failure(exc))
        finally:
            self._generations.pop(generation, None)

    def _post(self, generation: int, event: Any) -> None:
        if not self._outbox:
            # A moment later than at once: the other sequences' tokens of the same forward pass
            # arrive meanwhile and go in the same message, so the server wakes once a step.
            self._loop.call_later(FLUSH_DELAY, self._flush)
        self._outbox.append((generation, event))

    def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        if batch:
            self._send((wire.EVENTS, batch))

    # -- reporting -------------------------------------------------------------------------------

    def _status(self) -> wire.Status:
        engine = self._engine
        assert engine is not None
        return wire.Status(
            engine.model_name,
            engine.ready,
            engine.capabilities,
            tuple(engine.metrics()),
            engine.out_of_order,
        )

    async def _report(self) -> None:
        for _ in itertools.count():
            await asyncio.sleep(wire.STATUS_INTERVAL)
            self._send((wire.STATUS, self._status()))

    def _send(self, message: tuple[Any, ...]) -> None:
        """From the event loop and the call threads: one message at a time on the socket."""
        data = wire.dumps(message)
        with self._send_lock, contextlib.suppress(OSError):  # the server gone: the reader stops
            self._writing.send_bytes(data)


def _failure(exc: Exception) -> wire.Failure:
    """``exc`` as the server will re-raise it; logged here with its traceback unless it is an
    engine's typed error (a refusal, not a bug), which the server answers as it is."""
    if not isinstance(exc, EngineError):
        logger.error("the engine failed", exc_info=exc)
    return wire.Failure.of(exc)
