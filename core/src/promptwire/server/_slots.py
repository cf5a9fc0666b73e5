"""Requests served at once, counted across every route of one app.

The prompt route and the OpenAI routes share one count, so ``max_in_flight`` bounds what the
engine is asked to do whichever protocol asks it.
"""

from __future__ import annotations

from collections.abc import Callable

from promptwire.engine import EngineOverloaded

#: Seconds a client is told to wait (``Retry-After``) when every slot is taken.
RETRY_AFTER_SECONDS = 1


class RequestSlots:
    """At most ``limit`` requests at once (no limit when None)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.taken = 0

    def take(self, count: int = 1) -> Callable[[], None]:
        """Take ``count`` slots, or raise ``EngineOverloaded``; returns the function that gives
        them back (calling it again does nothing)."""
        if self.limit is not None and self.taken + count > self.limit:
            raise EngineOverloaded(
                f"{self.taken} requests are being served; try again",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self.taken += count
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.taken -= count

        return release
