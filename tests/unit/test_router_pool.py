"""The router's choices and cooldowns, with no I/O: ``promptwire.router._members``."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from promptwire.client import ClientConfig, EndpointClient
from promptwire.errors import (
    _SHOWN_MEMBERS,
    AllEndpointsFailedError,
    EndpointConnectError,
    EndpointTimeoutError,
    OverloadedError,
    ServerError,
)
from promptwire.router import RouterSettings
from promptwire.router._members import Member, Pool
from promptwire.router._settings import Strategy


def pool(
    strategy: Strategy = "least-busy", weights: tuple[float, ...] = (1, 1), **kw: int | float
) -> Pool:
    members = [
        Member(f"http://m{i}/", EndpointClient(ClientConfig(endpoint_url=f"http://m{i}/")), {}, w)
        for i, w in enumerate(weights)
    ]
    options = {"failures": 2, "max_retries": 0, **kw}
    return Pool(members, strategy=strategy, cooldown=30, retry_unsafe=False, **options)


def refused(member: Member) -> EndpointConnectError:
    return EndpointConnectError(
        "connection refused", url=member.label, transient=True, may_have_run=False
    )


def test_endpoints_are_urls_or_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    given = ["http://a/", {"url": "http://b/", "backend": "openai", "weight": 2}]
    monkeypatch.setenv("PROMPTWIRE_ROUTER__ENDPOINTS", json.dumps(given))
    settings = RouterSettings()
    assert [e.url for e in settings.endpoints] == ["http://a/", "http://b/"]
    assert settings.endpoints[1].backend == "openai" and settings.endpoints[1].weight == 2
    assert settings.strategy == "least-busy"


def test_an_unknown_strategy_or_key_is_refused() -> None:
    with pytest.raises(ValueError, match="strategy"):
        RouterSettings(strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="urll"):
        RouterSettings(endpoints=[{"urll": "http://a/"}])  # type: ignore[list-item]


def test_least_busy_takes_the_member_with_fewest_calls_in_flight() -> None:
    routes = pool()
    first = routes.pick(set())
    assert first is not None
    routes.begin(first)
    assert routes.pick(set()) is not first


def test_ordered_takes_the_first_that_is_not_cooling() -> None:
    routes = pool("ordered")
    a, b = routes.members
    assert routes.pick(set()) is a
    routes.failed(a, refused(a))
    assert routes.pick(set()) is a  # one failure of two
    routes.failed(a, refused(a))
    assert routes.pick(set()) is b


def test_retry_after_cools_at_once_and_other_errors_do_not_cool() -> None:
    routes = pool("ordered", failures=100)
    a, _ = routes.members
    routes.failed(a, ServerError("boom", url=a.label, status_code=500))
    routes.failed(a, ServerError("boom", url=a.label, status_code=500))
    assert a.cool_until == 0.0
    routes.failed(a, OverloadedError("busy", url=a.label, status_code=503, retry_after=7))
    assert routes.pick(set()) is not a


def test_weighted_follows_the_weights() -> None:
    routes = pool("weighted", weights=(1, 9))
    picks = Counter(routes.pick(set()) for _ in range(2000))
    assert picks[routes.members[1]] > 1500


def test_latency_prefers_the_faster_member() -> None:
    routes = pool("latency")
    slow, fast = routes.members
    for seconds in (0.5, 0.5, 0.5):
        routes.succeeded(slow, seconds)
    for seconds in (0.9, 0.05, 0.05):  # one slow call (a new connection) is outvoted
        routes.succeeded(fast, seconds)
    picks = Counter(routes.pick(set()) for _ in range(1000))
    assert picks[fast] > 900


def test_all_down_names_each_member() -> None:
    routes = pool()
    attempts = routes.start(60.0)
    for _ in routes.members:
        member = attempts.next()
        assert isinstance(member, Member)
        assert attempts.moves_on(member, refused(member))
    with pytest.raises(AllEndpointsFailedError) as caught:
        attempts.next()
    assert set(caught.value.failures) == {"http://m0/", "http://m1/"}
    assert all("connection refused" in why for why in caught.value.failures.values())
    assert not caught.value.may_have_run


def test_a_call_has_one_deadline_over_all_its_members() -> None:
    """No member is tried once the call's time is up, and no wait begins that would end past
    it: the call then raises, naming what was tried and what was not."""
    routes = pool(weights=(1, 1, 1), max_retries=5)
    attempts = routes.start(0.05)
    first = attempts.next()
    assert isinstance(first, Member)
    assert attempts.moves_on(first, refused(first))
    time.sleep(0.06)
    with pytest.raises(AllEndpointsFailedError) as caught:
        attempts.next()
    reasons = caught.value.failures
    assert reasons[first.label] == "connection refused"
    assert [why for label, why in reasons.items() if label != first.label] == [
        "not tried within the call's timeout (0.05 s)"
    ] * 2
    # A wait for a cooling member that would end past the deadline is not begun.
    cooled = pool(weights=(1,), failures=1, max_retries=5)
    waiting = cooled.start(5.0)
    only = waiting.next()
    assert isinstance(only, Member) and waiting.moves_on(only, refused(only))  # cooled 30 s
    started = time.monotonic()
    with pytest.raises(AllEndpointsFailedError, match="connection refused"):
        waiting.next()
    assert time.monotonic() - started < 1


def test_an_attempt_the_deadline_cut_ends_the_call_whatever_it_was() -> None:
    """A timeout that came from the call's own deadline ends the call with every member's
    reason, even one that may have run (it is not repeated: ``may_have_run`` says so)."""
    routes = pool()
    attempts = routes.start(0.01)
    member = attempts.next()
    assert isinstance(member, Member)
    time.sleep(0.02)
    timed_out = EndpointTimeoutError("no complete reply within 0.01s", url=member.label)
    assert attempts.moves_on(member, timed_out)
    with pytest.raises(AllEndpointsFailedError) as caught:
        attempts.next()
    assert caught.value.may_have_run


def test_the_error_about_a_thousand_members_stays_short() -> None:
    members = {f"http://127.0.0.1:{10000 + i}/": "cannot connect: refused" for i in range(1000)}
    error = AllEndpointsFailedError(members, may_have_run=False)
    assert len(str(error)) < 1000
    assert f"and {1000 - _SHOWN_MEMBERS} more" in str(error)
    assert "(1000 members)" in error.url
    assert error.failures == members  # every member is still there for code
