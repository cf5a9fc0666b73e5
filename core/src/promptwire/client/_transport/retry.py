"""When a failed call is tried again, and after how long: one policy, no I/O.

The sync and async clients run the same loop around it (try; on an ``EndpointError`` ask
``Retries.wait_after``; sleep that long, or raise when it says ``None``), so the two cannot drift
apart. A call is repeated only when the server cannot have run it (the connection was never
made, 429, 503) unless ``retry_unsafe`` is set, and only while it is ``transient``; waits back
off exponentially with jitter and honour ``Retry-After`` up to ``MAX_RETRY_AFTER``. A server that
asks for a longer wait than the call's ``timeout`` gets its error raised at once: the caller
would not wait that long for a reply, let alone for the next try (a 429 with ``Retry-After: 30``
held a call with a timeout of 3 s for 30 s).

A kept-alive connection the server closed just as a request went out on it fails before any
reply: the server cannot have run that request. It is sent again at once, outside the retry
budget, as Go's net/http does; each failed connection leaves the pool, so this ends after at most
the pool's idle connections, on a new connection.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from promptwire.client._transport.errors import StaleConnectionError
from promptwire.errors import EndpointError, HTTPStatusError

MAX_RETRY_AFTER = 60.0
#: Backoff without Retry-After: ``BACKOFF * 2**(retry - 1)`` plus up to ``JITTER``, at most
#: ``MAX_BACKOFF`` seconds.
BACKOFF = 0.5
JITTER = 1.0
MAX_BACKOFF = 8.0


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    retry_unsafe: bool = False
    max_stale: int = 100
    """How many reused connections in a row may turn out closed (the pool's size)."""
    longest_wait: float = math.inf
    """The longest ``Retry-After`` a retry waits for (the call's timeout): a server asking for
    more gets its error raised."""

    def should_retry(self, exc: EndpointError) -> bool:
        return exc.transient and (self.retry_unsafe or not exc.may_have_run)

    def wait(self, retry: int, exc: EndpointError) -> float | None:
        """Seconds before retry number ``retry`` (from 1): the server's ``Retry-After`` (None
        when longer than ``longest_wait``; ``MAX_RETRY_AFTER`` at most), else jittered
        exponential backoff."""
        retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
        if retry_after is not None:
            if retry_after > self.longest_wait:
                return None
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return min(BACKOFF * 2.0 ** (retry - 1) + random.uniform(0, JITTER), MAX_BACKOFF)

    def start(self) -> Retries:
        return Retries(self)


class Retries:
    """One call's attempts so far."""

    __slots__ = ("_policy", "_retries", "_stale")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._retries = 0
        self._stale = 0

    def wait_after(self, exc: EndpointError) -> float | None:
        """Seconds to wait before the next attempt after ``exc``, or None: give up, raise it."""
        policy = self._policy
        if isinstance(exc, StaleConnectionError) and self._stale < policy.max_stale:
            self._stale += 1
            return 0.0
        if self._retries >= policy.max_retries or not policy.should_retry(exc):
            return None
        self._retries += 1
        self._stale = 0  # each attempt may meet the pool's closed connections anew
        return policy.wait(self._retries, exc)


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (either form), or None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
