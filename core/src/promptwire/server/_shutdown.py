"""Graceful shutdown at the app's level: running requests and streams get a grace period, then
end with a protocol error instead of being cut."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    Callable,
    Iterator,
)
from typing import Any

from promptwire.protocol import (
    ErrorType,
)
from promptwire.server._errors import RequestError
from promptwire.server._slots import RETRY_AFTER_SECONDS
from promptwire.settings import DEFAULT_SHUTDOWN_GRACE

# sse-starlette ends a stream by itself this long after the app's own grace period, and uvicorn
# gives up on open connections this long after that: both only after the app has ended its own.
SHUTDOWN_MARGIN = 1.5


class GracefulShutdown:
    """The server's graceful shutdown, as the app sees it.

    ``promptwire serve`` calls ``begin`` when it is told to stop (SIGTERM, Ctrl+C). From then
    on, running whole replies and streams have ``grace`` seconds to finish; after that a stream
    ends with an ``error`` event (``shutting_down``) and a whole reply, or a stream that has not
    started, is answered 503 ``shutting_down`` with ``Retry-After``: never a cut without a word.
    """

    def __init__(self, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        self.grace = grace
        self.began = False
        self.expired = False
        self._callbacks: set[Callable[[], object]] = set()

    def begin(self) -> None:
        """Start the grace period; called in the app's event loop. Calling it again does nothing."""
        if not self.began:
            self.began = True
            asyncio.get_running_loop().call_later(self.grace, self._expire)

    def reset(self) -> None:
        """Serving again (the app's lifespan starts anew): no shutdown under way."""
        self.began = self.expired = False

    def _expire(self) -> None:
        self.expired = True
        for callback in list(self._callbacks):
            callback()

    def call_on_expiry(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when the grace period ends (at once if it has)."""
        if self.expired:
            callback()
        self._callbacks.add(callback)

    def forget(self, callback: Callable[[], object]) -> None:
        self._callbacks.discard(callback)

    @contextlib.contextmanager
    def on_expiry(self, callback: Callable[[], object]) -> Iterator[None]:
        """Within the block, ``callback`` is called when the grace period ends."""
        self.call_on_expiry(callback)
        try:
            yield
        finally:
            self.forget(callback)


def graceful_shutdown(app: Any) -> GracefulShutdown | None:
    """The shutdown of an app made by ``create_app`` (for the server running it), else None."""
    shutdown = getattr(getattr(app, "state", None), "graceful_shutdown", None)
    return shutdown if isinstance(shutdown, GracefulShutdown) else None


def shutting_down() -> RequestError:
    return RequestError(
        503,
        "the server is shutting down and its grace period ended; try again",
        error_type=ErrorType.SHUTTING_DOWN,
        retry_after=RETRY_AFTER_SECONDS,
        close=True,
    )
