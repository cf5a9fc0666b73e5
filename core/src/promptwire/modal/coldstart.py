"""Where a cold start's time goes, phase by phase, timed from inside the process.

A GPU container is billed from its first second, and a user waits for all of them. Each phase a
process goes through before it serves (its imports, the Volume's reload, the model load, the
first token) is timed once, logged as ``cold start: <phase> <seconds> s`` (Modal shows these
lines in the app's logs) and exposed on ``GET /metrics`` as
``promptwire_cold_start_seconds{phase=..., snapshot=...}``.

What happens before the process exists (Modal's scheduling, the image pull, the container's
boot) cannot be timed from inside. ``record_process_start`` times what can be: from the moment
the kernel started this process (``/proc/self/stat``) to the call, i.e. the interpreter's start
and whatever ran before the app module (Modal's own runtime).

Memory snapshots: a phase that ran before a snapshot ran once, in the container that made it; a
container restored from the snapshot inherits its record. Modal gives a restored container a new
task id (``MODAL_TASK_ID``), so each phase keeps the task id it was timed under and is reported
with ``snapshot="true"`` when that differs from the current one.

Standard library only: it is imported before the heavy imports it times.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from promptwire._logs import ensure_output

logger = logging.getLogger("promptwire.modal.coldstart")

TASK_ID_VARIABLE = "MODAL_TASK_ID"
PROCESS_START = "process_start"


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    task_id: str | None
    """The Modal task the phase ran in (None outside Modal)."""

    @property
    def from_snapshot(self) -> bool:
        """True when the phase ran in the container that made the memory snapshot this one was
        restored from, not in this one."""
        return self.task_id != os.environ.get(TASK_ID_VARIABLE)


_lock = threading.Lock()
_phases: dict[str, Phase] = {}


def record(name: str, seconds: float) -> None:
    """Record (and log) that phase ``name`` took ``seconds``; a phase recorded again is
    replaced."""
    phase = Phase(name, seconds, os.environ.get(TASK_ID_VARIABLE))
    with _lock:
        _phases[name] = phase
    ensure_output()
    logger.info("cold start: %s %.3f s", name, seconds)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase ``name``. A block that raises is logged, not recorded."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        ensure_output()
        logger.warning("cold start: %s failed after %.3f s", name, time.perf_counter() - started)
        raise
    record(name, time.perf_counter() - started)


def process_age() -> float | None:
    """Seconds since the kernel started this process, or None where ``/proc`` cannot say."""
    try:
        with open("/proc/self/stat", encoding="ascii") as file:
            stat = file.read()
        with open("/proc/uptime", encoding="ascii") as file:
            uptime = float(file.read().split()[0])
        # Fields after the command name, which is in parentheses and may hold spaces; the
        # start time is field 22 of the whole line, so the 20th after the name.
        start_ticks = int(stat.rpartition(")")[2].split()[19])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return age if age >= 0 else None


def record_process_start() -> None:
    """Record ``process_start``: from the kernel starting this process to now. Call it first
    thing in an app module, before its own imports."""
    age = process_age()
    if age is not None:
        record(PROCESS_START, age)


def import_modules(modules: Iterable[str]) -> None:
    """Import ``modules`` now, timed as the ``imports`` phase: what a container imports before
    it can serve, done before a memory snapshot is taken so that restored containers skip it."""
    with phase("imports"):
        for module in modules:
            importlib.import_module(module)


def phases() -> list[Phase]:
    """The phases recorded in this process, in the order they were first recorded."""
    with _lock:
        return list(_phases.values())


def summary() -> str:
    """One line: the phases this container ran, and those it inherited from a snapshot."""
    own = [p for p in phases() if not p.from_snapshot]
    inherited = [p for p in phases() if p.from_snapshot]
    line = f"{sum(p.seconds for p in own):.3f} s in this container (" + ", ".join(
        f"{p.name} {p.seconds:.3f} s" for p in own
    )
    line += ")"
    if inherited:
        line += "; restored from a memory snapshot made after " + ", ".join(
            f"{p.name} {p.seconds:.3f} s" for p in inherited
        )
    return line


def log_ready() -> None:
    """Log the summary once the process is ready to serve."""
    ensure_output()
    logger.info("cold start: ready after %s", summary())


def reset() -> None:
    """Forget every phase (tests)."""
    with _lock:
        _phases.clear()


__all__ = [
    "PROCESS_START",
    "TASK_ID_VARIABLE",
    "Phase",
    "import_modules",
    "log_ready",
    "phase",
    "phases",
    "process_age",
    "record",
    "record_process_start",
    "reset",
    "summary",
]
