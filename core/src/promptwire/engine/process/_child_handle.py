"""The server's handle on one engine process: starting it, its two sockets, the frames read
from it, and stopping it so that it never outlives the server.

``ProcessEngine`` (``_engine``) decides what to send and what a message means; this module only
moves bytes and processes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from promptwire.engine import EngineError, EngineEvent
from promptwire.engine.process import _wire as wire

#: How the child starts: with the server's own ``sys.path``, so it imports what the server
#: imports (a Modal container's mounted sources, a test's paths) without an installed dist.
_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from promptwire.engine.process._child import main; main(*map(int, sys.argv[2:]))"
)
#: Seconds a stopping child gets before it is terminated, then killed.
STOP_TIMEOUT = 10.0
#: Bytes read from the child at once: every message that is there, in one wake-up.
READ_SIZE = 1 << 18


class EngineProcessDied(EngineError):
    """The engine's process died while serving the request (a crash in native code, a kill):
    a 500, its message naming the signal or exit code. The server is restarting it."""


@dataclass
class Generation:
    """One generation's events, in the batches the child sent them."""

    queue: asyncio.Queue[list[EngineEvent | wire.Failure | EngineProcessDied]] = field(
        default_factory=asyncio.Queue
    )


class EngineChild:
    """One engine process: the socket to it (blocking writes, from any thread, under a lock),
    the socket from it (read by the event loop), and what waits on it."""

    def __init__(
        self,
        incarnation: int,
        process: subprocess.Popen[bytes],
        outbox: socket.socket,
        inbox: socket.socket,
    ) -> None:
        from multiprocessing.connection import Connection

        self.incarnation = incarnation
        self.process = process
        self.connection = Connection(outbox.detach())
        self.inbox = inbox
        self.buffer = bytearray()
        self.started_at = time.monotonic()
        self.send_lock = threading.Lock()
        self.calls: dict[int, Future[Any]] = {}
        self.generations: dict[int, Generation] = {}
        self.forgotten: list[int] = []
        self.status: wire.Status | None = None
        self.death: str | None = None
        self.closed = False
        """Its end of the socket closed: it serves nothing more (its exit not yet reaped)."""
        self.heard_at = time.monotonic()
        """When it last said anything (``time.monotonic()``)."""
        self.out_of_order: str | None = None  # what its engine reported, before it was stopped
        self.ended = asyncio.Event()
        self.failed = 0  # calls and generations in flight when it died
        self.started: Future[wire.Status] = Future()

    def send(self, message: tuple[Any, ...]) -> None:
        data = wire.dumps(message)
        with self.send_lock:
            if self.forgotten:
                forgotten, self.forgotten = self.forgotten, []
                self.connection.send_bytes(wire.dumps((wire.FORGET, forgotten)))
            self.connection.send_bytes(data)

    def received(self, data: bytes) -> Iterator[tuple[Any, ...]]:
        """The whole messages that ``data`` completes (``multiprocessing.connection``'s
        frames); a message's start waits in ``buffer`` for the rest of it."""
        buffer = self.buffer
        buffer += data
        offset = 0
        try:
            while len(buffer) - offset >= 4:
                size = int.from_bytes(buffer[offset : offset + 4], "big", signed=True)
                header = 4
                if size == -1:
                    if len(buffer) - offset < 12:
                        break
                    size, header = int.from_bytes(buffer[offset + 4 : offset + 12], "big"), 12
                end = offset + header + size
                if len(buffer) < end:
                    break
                message = wire.loads(buffer[offset + header : end])
                offset = end
                yield message
        finally:
            del buffer[:offset]


def launch_child(spec: bytes, incarnation: int) -> EngineChild:
    """Start an engine process and send it ``spec`` (what engine to make, with what)."""
    to_child, their_inbox = socket.socketpair()
    inbox, their_outbox = socket.socketpair()
    with their_inbox, their_outbox:
        fds = (their_inbox.fileno(), their_outbox.fileno())
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BOOT,
                json.dumps(sys.path),
                *map(str, fds),
                # The server's log level (promptwire serve --log-level), for the engine's.
                str(logging.getLogger("promptwire").getEffectiveLevel()),
            ],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
        )
    LIVE_CHILDREN.add(process)
    child = EngineChild(incarnation, process, to_child, inbox)
    child.connection.send_bytes(spec)
    return child


def exit_status(process: subprocess.Popen[bytes]) -> int:
    """``process``'s exit status, once it has closed its end; killed if it lingers."""
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def stop_child(child: EngineChild) -> None:
    """Ask ``child`` to stop, then kill it: it never outlives the server (it ignores SIGTERM,
    which a signal to the server's process group sends it too)."""
    process = child.process
    with contextlib.suppress(OSError):
        child.send((wire.STOP,))
    for end in (None, process.kill):
        if end is not None:
            end()
        try:
            process.wait(timeout=STOP_TIMEOUT)
            break
        except subprocess.TimeoutExpired:
            continue
    LIVE_CHILDREN.discard(process)


#: Every engine process not yet reaped: ended when the server's interpreter exits, whatever way.
LIVE_CHILDREN: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _end_children() -> None:
    for process in list(LIVE_CHILDREN):
        if process.poll() is None:
            process.kill()
