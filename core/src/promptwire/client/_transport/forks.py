"""What a forked child must not share with its parent: the connections promptwire opened, and
the locks that guard the making of clients.

A process that forks (``multiprocessing``'s default on Linux, gunicorn ``--preload``, Celery's
prefork pool) leaves the child holding the parent's kept-alive sockets. Both then write
requests on the same connection and each reads whichever reply comes first: another caller's
answer, without an error. So every forked child starts a new ``generation``, and a client made
in an older one is dropped, unclosed (closing a TLS connection writes to the socket the parent
still uses), and made again. A lock that another thread held at the fork stays held in the
child forever: a ``ForkSafeLock`` is a new, free one there.
"""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType

_generation = 0
_locks: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def generation() -> int:
    """How many forks stand between the first process and this one: a client made under
    another number was made by an ancestor, whose connections it holds."""
    return _generation


class ForkSafeLock:
    """A ``threading.Lock`` that a forked child gets free, whoever held it at the fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _locks.add(self)

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()


def _forked() -> None:
    global _generation
    _generation += 1
    for lock in list(_locks):
        lock._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_forked)
