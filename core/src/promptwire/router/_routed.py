"""A routed model built in code (``routed``), and what it has seen of each member
(``member_counts``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from promptwire.router._settings import RouterEndpoint, RouterSettings, Strategy

M = TypeVar("M")


def routed(
    model_class: type[M],
    endpoints: Sequence[str | RouterEndpoint | Mapping[str, Any]],
    *,
    strategy: Strategy = "least-busy",
    failures: int = 3,
    cooldown: float = 5.0,
    attempt_timeout: float | None = None,
    **fields: Any,
) -> M:
    """A ``PromptwireLLM``, ``ChatPromptwire`` or ``Modal`` (``model_class``) that routes over
    ``endpoints``; ``fields`` are the model's own (timeouts, credentials shared by members that
    give none, generation parameters). Nothing is read from ``PROMPTWIRE_ROUTER__*``."""
    from promptwire.router._adapter import RouterAdapter

    settings = RouterSettings(
        endpoints=[e.model_dump() if isinstance(e, RouterEndpoint) else e for e in endpoints],
        strategy=strategy,
        failures=failures,
        cooldown=cooldown,
        attempt_timeout=attempt_timeout,
    )
    model = model_class(**{**fields, "backend": None})
    use_backend = getattr(model, "use_backend", None)
    if use_backend is None:
        raise TypeError(f"{model_class.__name__} is not a promptwire model")
    use_backend("router", RouterAdapter(), settings)  # checks the members now
    return model


def member_counts(model: object) -> list[dict[str, Any]]:
    """What a routed model (``routed(...)`` or ``PROMPTWIRE_BACKEND=router``) has seen of each
    member in this process: ``endpoint``, calls ``served`` and ``failed``, calls ``in_flight``,
    ``latency_s`` (the median of its last calls, None before the first) and ``cooling_down_s``.
    ``promptwire status`` shows what each member's own server counts."""
    from promptwire.router._router_client import RouterClient

    client = getattr(model, "client", None) if hasattr(model, "use_backend") else None
    if not isinstance(client, RouterClient):
        raise TypeError(f"{type(model).__name__} does not use the router backend")
    return client.pool.counts()


__all__ = ["RouterEndpoint", "RouterSettings", "Strategy", "member_counts", "routed"]
