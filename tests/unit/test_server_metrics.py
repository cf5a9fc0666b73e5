"""The server's metrics are counted in plain numbers and written by prometheus-client at each
scrape: what a scrape shows must be exactly what prometheus-client's own metric objects, given
the same observations, would show."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from promptwire.server.observability._metrics import LATENCY_BUCKETS, ServerMetrics
from promptwire.server.observability._request_context import RequestRecord
from promptwire_modal_dummy.engine import DummyEngine

from tests.support.metrics import parse

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def _without_created(text: bytes) -> list[Sample]:
    return sorted(
        (name, tuple(sorted(labels.items())), value)
        for name, labels, value in parse(text.decode()).samples
        if not name.endswith("_created")
    )


def test_the_figures_are_what_prometheus_clients_metrics_would_show() -> None:
    ours = ServerMetrics(DummyEngine())
    reference = CollectorRegistry()
    duration = Histogram(
        "promptwire_request_duration_seconds",
        "d",
        ("route",),
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    requests = Counter(
        "promptwire_requests", "r", ("route", "status", "error_type"), registry=reference
    )
    tokens = Counter("promptwire_prompt_tokens", "p", ("route",), registry=reference)
    chance = random.Random(12)
    # Values on the buckets' bounds too: a bound is inclusive (``le``).
    values = [*LATENCY_BUCKETS, 0.0, 1e-9, 1e4, *(chance.uniform(0, 700) for _ in range(300))]
    for index, seconds in enumerate(values):
        route = ("/", "/v1/completions")[index % 2]
        status, error = ((200, None), (422, "invalid_request"), (503, "overloaded"))[index % 3]
        record = RequestRecord(f"id{index}", "POST", route, 0.0, status=status, error_type=error)
        record.prompt_tokens = index
        ours.request_started(record)
        ours.request_finished(record, seconds)
        duration.labels(route).observe(seconds)
        requests.labels(route, str(status), error or "").inc()
        tokens.labels(route).inc(index)

    def shown(name: str) -> list[Sample]:
        return [
            sample
            for sample in _without_created(generate_latest(ours.registry))
            if sample[0].startswith(name)
        ]

    expected = _without_created(generate_latest(reference))
    for name in (
        "promptwire_request_duration_seconds",
        "promptwire_requests_total",
        "promptwire_prompt_tokens",
    ):
        assert shown(name) == [sample for sample in expected if sample[0].startswith(name)]
    assert shown("promptwire_requests_in_flight") == [
        ("promptwire_requests_in_flight", (("route", "/"),), 0.0),
        ("promptwire_requests_in_flight", (("route", "/v1/completions"),), 0.0),
    ]
    # Nothing was generated yet, nor did a first token come: those families are empty.
    assert shown("promptwire_time_to_first_token_seconds") == []
    assert shown("promptwire_stream_tokens_per_second") == []


def test_the_version_is_unknown_where_promptwire_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Modal container has promptwire's sources, not its distribution: /metrics still answers."""
    import importlib.metadata

    import promptwire

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.delitem(vars(promptwire), "__version__", raising=False)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    (info,) = parse(generate_latest(ServerMetrics(DummyEngine()).registry).decode()).labels(
        "promptwire_info"
    )
    assert info["version"] == "unknown"


def test_the_observed_engine_forwards_every_part_of_the_engine_contract() -> None:
    """The server's proxy must pass on whatever the contract grows (capabilities, tools...):
    a method it inherits instead runs the base class's default, not the engine's."""
    from promptwire.engine import Engine
    from promptwire.server.observability._observed_engine import ObservedEngine

    contract = {
        name
        for name, value in vars(Engine).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }
    final = {"complete"}  # assembled from generate, which the proxy observes
    missing = contract - final - set(vars(ObservedEngine))
    assert not missing, f"ObservedEngine does not forward {sorted(missing)}"
