"""``ChatPromptwire``: a LangChain chat model on the same prompt endpoints as ``PromptwireLLM``.

Each request carries the conversation twice (protocol v1.1): as ``messages``, which a v1.1 server
renders with its model's chat template, and as ``prompt``, the same conversation rendered with the
plain template, which a v1 server (one that ignores ``messages``) answers instead. A v1 server that
refuses the unknown key outright (HTTP 400/422, and no protocol 1.1 on its ``/health``) is asked
once more without it, and from then on this object sends ``prompt`` alone.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.base import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field, PrivateAttr

from promptwire import protocol
from promptwire.chat_template import render_plain
from promptwire.client import StreamEvent
from promptwire.endpoint_model import PROVIDER, EndpointModel
from promptwire.errors import InvalidRequestError
from promptwire.protocol import PromptResponse, StreamDone, Usage
from promptwire.stops import StopScanner, truncate_at_stop
from promptwire.wire import ReasoningDelta, Reply

#: Where a reasoning model's reasoning goes in a message: LangChain's convention (DeepSeek,
#: Ollama, xAI), which ``content_blocks`` shows as a ``reasoning`` block.
REASONING_KEY = "reasoning_content"

_ROLES: dict[str, protocol.ChatRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}


class ChatPromptwire(EndpointModel, BaseChatModel):
    """A chat model served behind a prompt endpoint (a Modal web endpoint or ``promptwire serve``).

    The server applies its model's chat template to the conversation. Settings resolve as for
    ``PromptwireLLM``: arguments beat ``PROMPTWIRE_*`` variables (and ``.env``), which beat
    defaults. Batches run up to ``max_concurrency`` conversations at once.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # The endpoint fields (endpoint_url, backend, api_key, modal_key, modal_secret, model_kwargs,
    # timeout, connect_timeout, max_retries, retry_unsafe, max_concurrency) and the generation
    # fields (max_tokens, temperature, top_p, top_k, seed, stop) come from EndpointModel.
    model_name: str | None = Field(default=None, alias="model")
    """The served model's name, for tracing; replies that name their model take precedence."""
    streaming: bool = False
    """Stream every call (callbacks see each token, even through ``invoke``)."""

    _send_messages: bool = PrivateAttr(default=True)

    # -- LangChain metadata --------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "promptwire-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "backend": self.backend,
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            **self._generation_params(),
        }

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """The module that defines the class: LangChain's ``load`` imports it from there."""
        return ["promptwire", "chat"]

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._tracing_params("chat", stop, kwargs)

    def _default_model_name(self) -> str:
        return self.model_name or super()._default_model_name()

    def _model_param(self) -> dict[str, Any]:
        if self.model_name is not None and self._wire.names_model:
            return {"model": self.model_name}
        return {}

    # -- requests ------------------------------------------------------------------------------

    def _payload(
        self, messages: Sequence[BaseMessage], stops: list[str] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        wire = to_protocol_messages(messages)
        extra = {key: value for key, value in kwargs.items() if key != "stream"}
        payload: dict[str, Any] = {
            **self._base_params(),
            **extra,
            "prompt": render_plain(wire),
        }
        if self._send_messages:
            payload["messages"] = [message.model_dump() for message in wire]
        if stops:
            payload["stop"] = stops
        return payload

    # A request with ``messages`` refused as invalid (400/422) is asked again without them only
    # when the server does not say on /health that it speaks v1.1: a v1.1 server's refusal is
    # about something else (a bad parameter, a conversation its template cannot render) and is
    # reported, never papered over with the plain template.

    def _may_fall_back(self, payload: Mapping[str, Any], exc: InvalidRequestError) -> bool:
        return (
            self._wire.conversation_fallback
            and "messages" in payload
            and exc.status_code in (400, 422)
        )

    def _falls_back(self, payload: Mapping[str, Any], exc: InvalidRequestError) -> bool:
        if not self._may_fall_back(payload, exc):
            return False
        try:
            health = self.client.sync_client.get(_health_url(self.client.config.url))
        except httpx.HTTPError:
            return True
        return not _understands_messages(health)

    async def _afalls_back(self, payload: Mapping[str, Any], exc: InvalidRequestError) -> bool:
        if not self._may_fall_back(payload, exc):
            return False
        try:
            health = await self.client.async_client.get(_health_url(self.client.config.url))
        except httpx.HTTPError:
            return True
        return not _understands_messages(health)

    def _complete(self, payload: dict[str, Any]) -> PromptResponse:
        try:
            return self.client.complete(payload)
        except InvalidRequestError as exc:
            if not self._falls_back(payload, exc):
                raise
            reply = self.client.complete(_without_messages(payload))
            self._send_messages = False
            return reply

    async def _acomplete(self, payload: dict[str, Any]) -> PromptResponse:
        try:
            return await self.client.acomplete(payload)
        except InvalidRequestError as exc:
            if not await self._afalls_back(payload, exc):
                raise
            reply = await self.client.acomplete(_without_messages(payload))
            self._send_messages = False
            return reply

    def _events(self, payload: dict[str, Any]) -> Iterator[StreamEvent]:
        events = self.client.stream(payload)
        try:
            first = next(events)
        except InvalidRequestError as exc:
            if not self._falls_back(payload, exc):
                raise
            events = self.client.stream(_without_messages(payload))
            first = next(events)
            self._send_messages = False
        yield first
        yield from events

    async def _aevents(self, payload: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        events = self.client.astream(payload)
        try:
            first = await anext(events)
        except InvalidRequestError as exc:
            if not await self._afalls_back(payload, exc):
                raise
            events = self.client.astream(_without_messages(payload))
            first = await anext(events)
            self._send_messages = False
        try:
            yield first
            async for event in events:
                yield event
        finally:
            if isinstance(events, AsyncGenerator):  # close the response now, not when collected
                await events.aclose()

    # -- whole replies -------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stops = self._stops(stop)
        reply = self._complete(self._payload(messages, stops, kwargs))
        return self._chat_result(reply, stops)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stops = self._stops(stop)
        reply = await self._acomplete(self._payload(messages, stops, kwargs))
        return self._chat_result(reply, stops)

    def _chat_result(self, reply: PromptResponse, stops: list[str] | None) -> ChatResult:
        # Servers should apply ``stop`` themselves; cutting here too guards against ones that don't.
        text, stopped = truncate_at_stop(reply.prompt, stops)
        finish = "stop" if stopped else reply.finish_reason
        metadata = self._response_metadata(finish, reply.model)
        reasoning = reply.reasoning if isinstance(reply, Reply) else None
        message = AIMessage(
            content=text,
            additional_kwargs={REASONING_KEY: reasoning} if reasoning else {},
            usage_metadata=_usage_metadata(reply.usage),
            response_metadata=metadata,
        )
        llm_output: dict[str, Any] = {"model_name": metadata.get("model_name")}
        if reply.usage is not None:
            llm_output["token_usage"] = _token_usage(reply.usage)
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output=llm_output)

    def _response_metadata(self, finish_reason: Any, model: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"model_provider": PROVIDER}
        if finish_reason is not None:
            metadata["finish_reason"] = str(finish_reason)
        if model_name := model or self.model_name:
            metadata["model_name"] = model_name
        return metadata

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        usage = Usage()
        model = None
        for output in llm_outputs:
            if not output:
                continue
            if counted := output.get("token_usage"):
                usage.prompt_tokens += counted["prompt_tokens"]
                usage.completion_tokens += counted["completion_tokens"]
            model = model or output.get("model_name")
        return {"token_usage": _token_usage(usage), "model_name": model}

    # -- streams -------------------------------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # LangChain itself reports each chunk to the run manager's callbacks.
        stops = self._stops(stop)
        scanner = StopScanner(stops)
        for event in self._events(self._payload(messages, stops, kwargs)):
            if isinstance(event, ReasoningDelta):
                yield _reasoning_chunk(event.text)
                continue
            if isinstance(event, StreamDone):
                yield self._last_chunk(scanner, event)
                return
            if text := scanner.feed(event.text):
                yield ChatGenerationChunk(message=AIMessageChunk(content=text))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        stops = self._stops(stop)
        scanner = StopScanner(stops)
        async for event in self._aevents(self._payload(messages, stops, kwargs)):
            if isinstance(event, ReasoningDelta):
                yield _reasoning_chunk(event.text)
                continue
            if isinstance(event, StreamDone):
                yield self._last_chunk(scanner, event)
                return
            if text := scanner.feed(event.text):
                yield ChatGenerationChunk(message=AIMessageChunk(content=text))

    def _last_chunk(self, scanner: StopScanner, done: StreamDone) -> ChatGenerationChunk:
        """Held-back text, if any, with the usage and metadata of the whole reply."""
        tail = scanner.flush()
        finish = "stop" if scanner.stopped else done.finish_reason
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=tail,
                usage_metadata=_usage_metadata(done.usage),
                response_metadata=self._response_metadata(finish, done.model),
                chunk_position="last",
            )
        )

    # -- batches, run concurrently -------------------------------------------------------------

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Run the conversations concurrently, at most ``max_concurrency`` at once (unless the
        config sets its own ``max_concurrency``)."""
        return super().batch(
            inputs, self._bounded(config), return_exceptions=return_exceptions, **kwargs
        )

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        return await super().abatch(
            inputs, self._bounded(config), return_exceptions=return_exceptions, **kwargs
        )

    def _bounded(
        self, config: RunnableConfig | list[RunnableConfig] | None
    ) -> RunnableConfig | list[RunnableConfig]:
        def bound(one: RunnableConfig | None) -> RunnableConfig:
            one = RunnableConfig(**(one or {}))
            if one.get("max_concurrency") is None:
                one["max_concurrency"] = int(self.max_concurrency or 1)
            return one

        if isinstance(config, list):
            return [bound(one) for one in config]
        return bound(config)


def to_protocol_messages(messages: Sequence[BaseMessage]) -> list[protocol.ChatMessage]:
    """LangChain messages as the protocol's ``messages`` (text only; no tool messages)."""
    if not messages:
        raise ValueError("ChatPromptwire needs at least one message")
    return [
        protocol.ChatMessage(role=_role(message), content=_text(message)) for message in messages
    ]


def _role(message: BaseMessage) -> protocol.ChatRole:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ChatMessage) and message.role.lower() in _ROLES:
        return _ROLES[message.role.lower()]
    raise ValueError(
        f"ChatPromptwire sends system, user and assistant messages only, not {message.type!r} "
        "(it has no tool calling)"
    )


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    for block in message.content:
        kind = "text" if isinstance(block, str) else block.get("type")
        if kind != "text" and not isinstance(message, AIMessage):
            raise ValueError(f"ChatPromptwire sends text only, not {kind!r} content blocks")
    return str(message.text)


def _health_url(endpoint_url: str) -> str:
    return endpoint_url.rstrip("/") + "/health"


def _understands_messages(health: httpx.Response) -> bool:
    """Whether a ``/health`` answer says protocol 1.1 or later."""
    try:
        version = health.json().get("protocol", "1") if health.status_code == 200 else "1"
        major, minor, *_ = (int(part) for part in f"{version}.0".split("."))
    except (ValueError, AttributeError, TypeError):
        return False
    return (major, minor) >= (1, 1)


def _reasoning_chunk(text: str) -> ChatGenerationChunk:
    message = AIMessageChunk(content="", additional_kwargs={REASONING_KEY: text})
    return ChatGenerationChunk(message=message)


def _without_messages(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "messages"}


def _usage_metadata(usage: Usage | None) -> UsageMetadata | None:
    if usage is None:
        return None
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _token_usage(usage: Usage) -> dict[str, int]:
    return {**usage.model_dump(), "total_tokens": usage.total_tokens}


__all__ = [
    "PROVIDER",
    "ChatPromptwire",
    "to_protocol_messages",
]
