"""The members' state and how a call picks one, with no I/O: the sync and async routers run
the same loop around it (pick; call; report), as ``promptwire.client._transport`` shares its
exchange.

A member that refuses connections, times out, or answers 429/503 has failed; after
``failures`` failures in a row it is cooled down for ``cooldown`` seconds, and an answer with
a positive ``Retry-After`` cools it at once for that long (at most ``MAX_RETRY_AFTER``; 0
counts as a failure without one). A success resets
the count; a cooled member comes back by itself when its time is up. A call moves to another
member only after a failure the member cannot have run the request on (``retry_unsafe``
widens this, as for one endpoint). When no member is left to try, the call waits for the first
to come back, at most ``max_retries`` times, then raises ``AllEndpointsFailedError``.

A call has one deadline, its ``timeout`` from when it starts, however many members it tries:
each attempt is due by it (``promptwire.client._transport.exchange.ending_by``), no member is
tried and no wait begun past it, and the call then raises ``AllEndpointsFailedError``.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

from promptwire.client import MAX_RETRY_AFTER, EndpointClient
from promptwire.errors import (
    AllEndpointsFailedError,
    EndpointConnectError,
    EndpointError,
    EndpointTimeoutError,
    HTTPStatusError,
    UnsupportedFeatureError,
    _shown_members,
    _shown_reasons,
)
from promptwire.router._settings import Strategy

logger = logging.getLogger("promptwire.router")

#: A member's latency is the median of its last ``LATENCY_SAMPLES`` calls, so one slow call (a
#: new connection, a busy moment) does not steer traffic away from it; the ``latency`` strategy
#: measures each member ``MIN_SAMPLES`` times before it compares them.
LATENCY_SAMPLES = 5
MIN_SAMPLES = 3
#: Share of calls the ``latency`` strategy sends to a member at random, so a member that was
#: slow once is measured again.
EXPLORE = 0.05
#: Seconds waited when every member failed and none is cooling down (its failures < threshold).
RETRY_PAUSE = 0.5


class Member:
    """One endpoint of a router: its client (own pools), its defaults, and what it has shown."""

    def __init__(
        self, label: str, client: EndpointClient, defaults: Mapping[str, Any], weight: float
    ) -> None:
        self.label = label
        """Its URL without query or credentials: what logs, metadata and errors show."""
        self.client = client
        self.conversations = client.conversations(fallback=client.wire.conversation_fallback)
        """Its own negotiation of the protocol version (what it speaks, once it has said)."""
        self.defaults = dict(defaults)
        self.weight = weight
        self.index = 0
        """Its place among the pool's members."""
        self.in_flight = 0
        self.turn = 0
        """When least-busy last picked it (ties go to the member picked longest ago)."""
        self.served = 0
        self.failed = 0
        self.failures_in_row = 0
        self.cool_until = 0.0
        self.samples: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"Member({self.label!r})"

    @property
    def latency(self) -> float | None:
        """The median of its last calls (None before the first; a call it failed counts as
        ``inf``, see ``member_at_fault``): worked out when asked, not on every call."""
        return statistics.median(self.samples) if self.samples else None

    def payload(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The request for this member: its backend's defaults under the call's parameters."""
        return {**self.defaults, **payload} if self.defaults else dict(payload)


def member_is_down(exc: EndpointError) -> bool:
    """Whether a failure says the member cannot take calls now (not that the request was bad)."""
    if isinstance(exc, HTTPStatusError):
        return exc.status_code in (429, 503)
    return isinstance(exc, (EndpointConnectError, EndpointTimeoutError))


def member_at_fault(exc: EndpointError) -> bool:
    """Whether a failure is the member's (down, broken, refusing its key, a reply that cannot
    be read), not the request's (a 400, 413 or 422): the ``latency`` strategy counts it as a
    call that never ended, so a member that fails fast does not look fast."""
    if isinstance(exc, HTTPStatusError):
        return exc.status_code >= 500 or exc.status_code in (401, 403, 404, 405, 429)
    return True


class Pool:
    """The members and the rules of the road, shared by every call of one model object, from
    any thread and event loop (a lock guards the counters; it is never held across I/O)."""

    def __init__(
        self,
        members: list[Member],
        *,
        strategy: Strategy,
        failures: int,
        cooldown: float,
        max_retries: int,
        retry_unsafe: bool,
        attempt_timeout: float | None = None,
    ) -> None:
        self.members = members
        for index, member in enumerate(members):
            member.index = index
        self.strategy = strategy
        self.failures = failures
        self.cooldown = cooldown
        self.max_retries = max_retries
        self.retry_unsafe = retry_unsafe
        self.attempt_timeout = attempt_timeout
        self._lock = threading.Lock()
        self._turn = 0

    def start(self, seconds: float) -> Attempts:
        """A call, due within ``seconds`` (the model's ``timeout``)."""
        return Attempts(self, seconds)

    # -- reports from calls --------------------------------------------------------------------

    def begin(self, member: Member) -> None:
        with self._lock:
            member.in_flight += 1

    def end(self, member: Member) -> None:
        with self._lock:
            member.in_flight -= 1

    def succeeded(self, member: Member, seconds: float) -> None:
        """A reply (or a stream's first piece) after ``seconds``."""
        with self._lock:
            member.served += 1
            member.failures_in_row = 0
            member.samples.append(seconds)
        logger.debug("call served by %s in %.3f s", member.label, seconds)

    def failed(self, member: Member, exc: EndpointError) -> None:
        """A failure: counted, and the member cooled down when it is down (see the module)."""
        reason = _reason(exc)
        with self._lock:
            member.failed += 1
            member.last_error = reason
            if member_at_fault(exc):
                member.samples.append(math.inf)
            if not member_is_down(exc):
                return
            member.failures_in_row += 1
            retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
            if retry_after is not None and retry_after > 0:  # 0 or less: counted as without
                seconds = min(retry_after, MAX_RETRY_AFTER)
            elif member.failures_in_row >= self.failures:
                seconds = self.cooldown
            else:
                return
            member.cool_until = max(member.cool_until, time.monotonic() + seconds)
            member.failures_in_row = 0
        logger.warning("%s cooled down for %.1f s: %s", member.label, seconds, reason)

    def moves_on(self, exc: EndpointError) -> bool:
        """Whether a call may go to another member after ``exc`` (the single endpoint's rule)."""
        return exc.transient and (self.retry_unsafe or not exc.may_have_run)

    # -- choosing ------------------------------------------------------------------------------

    def pick(self, exclude: Collection[int] = ()) -> Member | None:
        """The member the strategy picks among those neither cooling down nor in ``exclude``."""
        now = time.monotonic()
        with self._lock:
            ready = [
                m
                for i, m in enumerate(self.members)
                if m.cool_until <= now and (not exclude or i not in exclude)
            ]
            if not ready:
                return None
            if self.strategy == "ordered":
                return ready[0]
            if self.strategy == "weighted":
                return random.choices(ready, weights=[m.weight for m in ready])[0]
            if self.strategy == "latency":
                return _fastest(ready)
            chosen = min(ready, key=_load)  # ties in turn: the one picked longest ago
            self._turn += 1
            chosen.turn = self._turn
            return chosen

    def wait_for_one(self) -> float:
        """Seconds until the first cooling member comes back (or a short pause if none cools)."""
        now = time.monotonic()
        with self._lock:
            cooling = [m.cool_until - now for m in self.members if m.cool_until > now]
        return min(max(min(cooling), 0.0), MAX_RETRY_AFTER) if cooling else RETRY_PAUSE

    def why_down(self, tried: Mapping[int, str], untried: str = "not tried") -> dict[str, str]:
        """Each member and why it could not take the call, for ``AllEndpointsFailedError``."""
        now = time.monotonic()
        reasons = {}
        for index, member in enumerate(self.members):
            if index in tried:
                reasons[member.label] = tried[index]
            elif member.cool_until > now:
                why = member.last_error or "failing"
                reasons[member.label] = f"cooling down for {member.cool_until - now:.1f} s ({why})"
            else:
                reasons[member.label] = untried
        return reasons

    def counts(self) -> list[dict[str, Any]]:
        """Per member: served and failed calls, in flight, latency, cooling down (for status)."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "endpoint": m.label,
                    "served": m.served,
                    "failed": m.failed,
                    "in_flight": m.in_flight,
                    "latency_s": m.latency,
                    "cooling_down_s": max(0.0, m.cool_until - now),
                }
                for m in self.members
            ]


def _load(member: Member) -> tuple[int, int]:
    return member.in_flight, member.turn


def _fastest(ready: list[Member]) -> Member:
    """A member not yet measured ``MIN_SAMPLES`` times first (the least busy of them), else now
    and then any member, else the lowest recent latency."""
    unmeasured = [m for m in ready if len(m.samples) < MIN_SAMPLES]
    if unmeasured:
        fewest = min(m.in_flight for m in unmeasured)
        return random.choice([m for m in unmeasured if m.in_flight == fewest])
    if len(ready) > 1 and random.random() < EXPLORE:
        return random.choice(ready)
    return min(ready, key=lambda m: m.latency or 0.0)


def _reason(exc: EndpointError) -> str:
    """What went wrong, without the URL (the member names it), with the request id its
    operator can look up."""
    text = Exception.__str__(exc)
    suffix = f" ({exc.url})"
    text = text[: -len(suffix)] if text.endswith(suffix) else text
    return f"{text} [request {exc.request_id}]" if exc.request_id else text


class Attempts:
    """One call's way through the members: which were tried, why they failed, waits so far."""

    def __init__(self, pool: Pool, seconds: float) -> None:
        self.pool = pool
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        """When the call must be over (``time.monotonic()``): its attempts are due by then."""
        self.tried: dict[int, str] = {}
        self.unable: dict[int, str] = {}
        """Members that cannot take this call (too old a protocol for its tools): not retried."""
        self.waits = 0
        self.may_have_run = False

    def next(self) -> Member | float:
        """The member to try next, or seconds to wait before asking again; raises
        ``AllEndpointsFailedError`` when the call has waited ``max_retries`` times already, and
        ``UnsupportedFeatureError`` when no member can take it; ``AllEndpointsFailedError`` too
        once the call's time is up."""
        if time.monotonic() >= self.ends:
            raise self.out_of_time()
        # Most calls find their first member: no set made for them.
        member = self.pool.pick(
            self.tried.keys() | self.unable.keys() if self.tried or self.unable else ()
        )
        if member is not None:
            return member
        if len(self.unable) == len(self.pool.members):
            labels = [m.label for m in self.pool.members]
            raise UnsupportedFeatureError(
                "no member of the router can take this call: "
                + _shown_reasons({labels[i]: why for i, why in sorted(self.unable.items())}),
                url=_shown_members(labels),
            )
        if self.waits >= self.pool.max_retries:
            raise AllEndpointsFailedError(
                self.pool.why_down({**self.tried, **self.unable}), may_have_run=self.may_have_run
            )
        wait = self.pool.wait_for_one()
        if time.monotonic() + wait >= self.ends:
            raise self.out_of_time()
        self.waits += 1
        self.tried.clear()
        return wait

    def attempt_ends(self) -> float:
        """When an attempt starting now must be over: the call's end, or sooner with the
        pool's ``attempt_timeout`` (cut there, it is a timeout: the member fails, and the call
        moves on where a timeout allows it)."""
        if self.pool.attempt_timeout is None:
            return self.ends
        return min(self.ends, time.monotonic() + self.pool.attempt_timeout)

    def out_of_time(self) -> AllEndpointsFailedError:
        untried = f"not tried within the call's timeout ({self.seconds:g} s)"
        return AllEndpointsFailedError(
            self.pool.why_down({**self.tried, **self.unable}, untried),
            may_have_run=self.may_have_run,
        )

    def moves_on(self, member: Member, exc: EndpointError) -> bool:
        """Report ``exc``; whether the call may move to another member (else it raises ``exc``)."""
        if isinstance(exc, UnsupportedFeatureError):  # nothing was sent; it is not down
            self.unable[member.index] = _reason(exc)
            logger.debug("%s cannot take this call: %s", member.label, _reason(exc))
            return True
        self.pool.failed(member, exc)
        # The call's own deadline cut the attempt short: the call is over, and says so for
        # every member (a timeout after the request went out included: may_have_run says so).
        out_of_time = isinstance(exc, EndpointTimeoutError) and time.monotonic() >= self.ends
        if not out_of_time and not self.pool.moves_on(exc):
            return False
        self.may_have_run = self.may_have_run or exc.may_have_run
        self.tried[member.index] = _reason(exc)
        logger.debug("%s failed, trying another member: %s", member.label, _reason(exc))
        return True
