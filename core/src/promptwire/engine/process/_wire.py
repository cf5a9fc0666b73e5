"""What crosses the pipe between the server and its engine process, both ways.

Every message is one pickled tuple whose first item names it; the connection frames them
(``multiprocessing.connection.Connection`` on a Unix socket pair). Generated events go in
batches: the child sends everything that is ready in one message, so a token costs no round
trip and no message of its own under load.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
from dataclasses import dataclass
from typing import Any

from promptwire.engine import EngineError

# Server -> engine process.
SPEC = "spec"  # (SPEC, create_engine, settings): the first message, what to build
RENDER = "render"  # (RENDER, call, messages, tools | None)
PREPARE = "prepare"  # (PREPARE, call, request): the child keeps the result under ``call``
COUNT = "count"  # (COUNT, call, request)
GENERATE = "generate"  # (GENERATE, generation, prepared_call)
CANCEL = "cancel"  # (CANCEL, generation)
FORGET = "forget"  # (FORGET, [prepared_call, ...]): prepared, never generated
STOP = "stop"  # (STOP,)

# Engine process -> server.
STARTED = "started"  # (STARTED, Status)
START_FAILED = "start_failed"  # (START_FAILED, Failure)
REPLY = "reply"  # (REPLY, call, ok, value | Failure)
EVENTS = "events"  # (EVENTS, [(generation, EngineEvent | Failure), ...])
STATUS = "status"  # (STATUS, Status): sent every STATUS_INTERVAL seconds

STATUS_INTERVAL = 0.5


@dataclass(frozen=True)
class Status:
    """What the server reads without asking: the engine's facts and gauges, kept fresh."""

    model_name: str | None
    ready: bool
    capabilities: Any  # promptwire.protocol.Capabilities
    metrics: tuple[Any, ...]  # EngineMetric, ...
    out_of_order: str | None = None
    """``Engine.out_of_order``: the server then stops this process and starts another."""


@dataclass(frozen=True)
class Failure:
    """An exception raised in the engine process, as the server re-raises it.

    An ``EngineError`` keeps its class, message and ``retry_after`` (its status reaches the
    client as it would in-process); anything else keeps only its class name and message, for
    the server's log: the client gets "internal server error".
    """

    error_class: type[BaseException] | None
    class_name: str
    message: str
    retry_after: float | None = None
    status_code: int | None = None
    error_type: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        if isinstance(exc, EngineError):
            return cls(
                type(exc),
                type(exc).__name__,
                exc.message,
                exc.retry_after,
                exc.status_code,
                str(exc.error_type),
            )
        kept = type(exc) if _picklable(type(exc)) else None
        return cls(kept, type(exc).__name__, str(exc))

    def exception(self) -> BaseException:
        error_class = self.error_class
        if error_class is not None and issubclass(error_class, EngineError):
            try:
                error = error_class(self.message, retry_after=self.retry_after)
            except Exception:  # a subclass with its own constructor
                error = EngineError(self.message, retry_after=self.retry_after)
            # As the engine raised it, whatever its constructor does (set per instance, too).
            if self.status_code is not None:
                error.status_code = self.status_code
            if self.error_type is not None:
                error.error_type = self.error_type  # type: ignore[assignment]
            return error
        if error_class is not None:
            with contextlib.suppress(Exception):  # a constructor of its own: said plainly below
                return error_class(self.message)
        return RuntimeError(f"{self.class_name}: {self.message}")


def _picklable(error_class: type[BaseException]) -> bool:
    try:
        pickle.dumps(error_class)
    except Exception:
        return False
    return True


def dumps(message: tuple[Any, ...]) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes | bytearray) -> Any:
    """A message from the other end of the socket pair: only the server and the engine
    process it started hold its ends, so nothing untrusted is unpickled."""
    return pickle.loads(data)  # noqa: S301 - our own child's (or parent's) messages


def describe_exit(returncode: int | None) -> str:
    """A child's end in words: ``SIGABRT``, ``exit code 3``."""
    if returncode is None:
        return "unknown exit"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"
