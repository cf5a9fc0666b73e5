"""The engine as the server's routes see it: the real one, with every generation observed.

Routes call the engine and nothing else, so observing it here counts every route, including
routes added later (the OpenAI-compatible ones), without their help: the first token's time, the
finish reason and token counts go to the current request's record, a generation waiting for its
first token counts as queued, and each finished generation's tokens per second is measured.
Everything else passes straight through.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from promptwire.engine import Engine, EngineEvent, EngineMetric, Finish, TextChunk, ToolCall
from promptwire.protocol import Capabilities, ChatMessage, PromptRequest, ToolSpec
from promptwire.server.observability._metrics import ServerMetrics
from promptwire.server.observability._request_context import current_request


class ObservedEngine(Engine[Any]):
    """``engine`` with its generations observed for ``metrics`` (None: metrics off) and the
    request log (``log_prompts``: the prompt goes into the request's record)."""

    def __init__(
        self, engine: Engine[Any], metrics: ServerMetrics | None, *, log_prompts: bool = False
    ) -> None:
        self.inner = engine
        self._metrics = metrics
        self._log_prompts = log_prompts

    @property
    def model_name(self) -> str | None:
        return self.inner.model_name

    @model_name.setter
    def model_name(self, value: str | None) -> None:
        self.inner.model_name = value

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    @property
    def ready(self) -> bool:
        return self.inner.ready

    @property
    def not_ready_reason(self) -> str:
        return self.inner.not_ready_reason

    @property
    def out_of_order(self) -> str | None:
        return self.inner.out_of_order

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return self.inner.render_chat(messages)

    def render_chat_with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> str:
        return self.inner.render_chat_with_tools(messages, tools)

    def prepare(self, request: PromptRequest) -> Any:
        return self.inner.prepare(request)

    @property
    def prepares_quickly(self) -> bool:
        return self.inner.prepares_quickly

    @property
    def renders_quickly(self) -> bool:
        return self.inner.renders_quickly

    def count_prompt_tokens(self, request: PromptRequest) -> int:
        return self.inner.count_prompt_tokens(request)

    def metrics(self) -> Sequence[EngineMetric]:
        return self.inner.metrics()

    def stream(self, prepared: Any) -> AsyncGenerator[EngineEvent, None]:
        """The engine's own stream, unobserved and without the request's limits: the server
        calls ``generate`` (or ``complete``), never this."""
        return self.inner.stream(prepared)

    # ``generate`` is final for engines: the loop that applies a request's limits is the core's.
    # The server's proxy is the one exception: it runs the engine's own ``generate`` (that loop)
    # and watches what comes out, as the client will get it. ``complete`` (final, inherited)
    # assembles its reply from this.
    async def generate(  # type: ignore[misc]
        self, request: PromptRequest, prepared: Any = None
    ) -> AsyncGenerator[EngineEvent, None]:
        """The engine's ``generate``, observed: queued until its first text, then the first
        token's time, and at its ``Finish`` the finish reason, token counts and speed."""
        record = current_request()
        metrics = self._metrics
        if record is not None:
            record.generations += 1
            if self._log_prompts and record.prompt is None:
                record.prompt = request.prompt
        events = self.inner.generate(request, prepared)
        waiting = True
        first = 0.0
        if metrics is not None:
            metrics.queued += 1
        try:
            async for event in events:
                if waiting and isinstance(event, TextChunk | ToolCall):
                    waiting = False
                    first = time.perf_counter()
                    if metrics is not None:
                        metrics.queued -= 1
                    if record is not None and record.note_first_token() and metrics is not None:
                        metrics.first_token_seen(record)
                elif isinstance(event, Finish):
                    self._finished(event, None if waiting else first)
                yield event
        finally:
            if waiting and metrics is not None:
                metrics.queued -= 1
            await events.aclose()

    def _finished(self, finish: Finish, first: float | None) -> None:
        record = current_request()
        usage = finish.usage
        if record is not None:
            record.note_finish(finish.finish_reason, usage.prompt_tokens, usage.completion_tokens)
        if self._metrics is None or first is None or usage.completion_tokens < 2:
            return
        elapsed = time.perf_counter() - first
        if elapsed > 0:
            # The first token's time is the queue's and the prefill's; the rest is decoding.
            self._metrics.stream_finished(record, (usage.completion_tokens - 1) / elapsed)
