"""How ``PromptwireLLM`` and ``ChatPromptwire`` run a batch: each input its own call, at most
``max_concurrency`` at once, and one result per input, in order: its answer or, with
``return_exceptions``, its own error (with its own request id).

LangChain's ``BaseLLM.batch`` runs a batch as one ``generate`` call, and when any prompt fails
it returns that one exception for every prompt, the answered ones included (8 prompts of which the
server refused one came back as 8 copies of its 422; over a router with a failing member, 40
copies of one error): a caller retrying the "failed" prompts ran answered ones twice.
``Runnable.batch``, which chat models inherit, calls each input on its own; both models use it,
through here.
"""

from __future__ import annotations

from typing import Any, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig

Input = TypeVar("Input")
Output = TypeVar("Output")


def bounded(
    config: RunnableConfig | list[RunnableConfig] | None, limit: int
) -> RunnableConfig | list[RunnableConfig]:
    """``config`` with ``max_concurrency`` set to ``limit`` where it sets none."""

    def bound(one: RunnableConfig | None) -> RunnableConfig:
        one = RunnableConfig(**(one or {}))
        if one.get("max_concurrency") is None:
            one["max_concurrency"] = limit
        return one

    if isinstance(config, list):
        return [bound(one) for one in config]
    return bound(config)


def batch_each(
    model: Runnable[Input, Output],
    inputs: list[Input],
    config: RunnableConfig | list[RunnableConfig] | None,
    limit: int,
    *,
    return_exceptions: bool,
    **kwargs: Any,
) -> list[Output]:
    """``model.invoke`` on each input in threads, at most ``limit`` (or the config's own
    ``max_concurrency``) at once; results in the order of ``inputs``."""
    return Runnable.batch(
        model, inputs, bounded(config, limit), return_exceptions=return_exceptions, **kwargs
    )


async def abatch_each(
    model: Runnable[Input, Output],
    inputs: list[Input],
    config: RunnableConfig | list[RunnableConfig] | None,
    limit: int,
    *,
    return_exceptions: bool,
    **kwargs: Any,
) -> list[Output]:
    """``model.ainvoke`` on each input, at most ``limit`` (or the config's own
    ``max_concurrency``) at once; results in the order of ``inputs``."""
    return await Runnable.abatch(
        model, inputs, bounded(config, limit), return_exceptions=return_exceptions, **kwargs
    )
