"""``ChatPromptwire``: a LangChain chat model on the same prompt endpoints as ``PromptwireLLM``.

Each request carries the conversation twice (protocol v1.1): as ``messages``, which a v1.1 server
renders with its model's chat template, and as ``prompt``, the same conversation rendered with the
plain template, which a v1 server (one that ignores ``messages``) answers instead. A v1 server that
refuses the unknown key outright (HTTP 400/422, and no protocol 1.1 on its ``/health``) is asked
once more without it, and from then on this object sends ``prompt`` alone.

Tool calling and structured output (protocol v1.2): ``bind_tools`` sends ``tools`` and
``tool_choice`` in OpenAI's shape, ``with_structured_output`` a ``response_format`` (or a forced
tool call), and the conversation carries tool calls and ``ToolMessage`` results. Calls come back
as ``AIMessage.tool_calls`` (``invalid_tool_calls`` when their arguments are not a JSON object) and
as ``tool_call_chunks`` in streams. Before a request that needs v1.2 this object reads the
server's ``/health`` once: an older server would ignore the tools and answer free text, so it is
refused here instead (``UnsupportedFeatureError``). The ``openai`` backend's servers are asked
directly: the OpenAI API has these fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.base import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from promptwire.client import StreamEvent
from promptwire.client._transport.negotiation import ConversationNegotiator
from promptwire.client.wire import ReasoningDelta, Reply
from promptwire.langchain._batches import abatch_each, batch_each
from promptwire.langchain._chat_messages import (
    REASONING_KEY,
    protocol_tool_choice,
    read_tool_calls,
    reasoning_chunk,
    response_format_of,
    to_protocol_messages,
    token_usage,
    tool_call_piece_chunk,
    usage_metadata_of,
)
from promptwire.langchain._endpoint_model import PROVIDER, EndpointModel
from promptwire.langchain._stop_guard import StopGuard
from promptwire.protocol import PromptResponse, StreamDone, StreamToolCall, Usage
from promptwire.protocol.chat_template import render_plain
from promptwire.router._served import served_by


class ChatPromptwire(EndpointModel, BaseChatModel):
    """A chat model served behind a prompt endpoint (a Modal web endpoint or ``promptwire serve``).

    The server applies its model's chat template to the conversation. Settings resolve as for
    ``PromptwireLLM``: arguments beat ``PROMPTWIRE_*`` variables (and ``.env``), which beat
    defaults. Batches run up to ``max_concurrency`` conversations at once.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # The endpoint and generation fields come from EndpointModel.
    model_name: str | None = Field(default=None, alias="model")
    """The served model's name, for tracing; replies that name their model take precedence."""
    streaming: bool = False
    """Stream every call (callbacks see each token, even through ``invoke``)."""

    _negotiator: ConversationNegotiator | None = PrivateAttr(default=None)
    _CONNECTED: ClassVar[tuple[str, ...]] = ("_client", "_negotiator")  # it holds the client

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
        """Where LangChain's ``load`` finds the class: the package itself, whose names stay put
        wherever the module that defines them moves."""
        return ["promptwire"]

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
        if self._conversations.send_messages:
            payload["messages"] = [message.model_dump(exclude_none=True) for message in wire]
        if stops:
            payload["stop"] = stops
        return payload

    # Protocol negotiation (v1.1's fallback without messages, v1.2's check that the server
    # speaks it) is the client layer's: promptwire.client._transport.negotiation.

    @property
    def _conversations(self) -> ConversationNegotiator:
        client = self.client
        negotiator = self._negotiator
        if negotiator is None or negotiator.client is not client:
            fallback = self._wire.conversation_fallback
            negotiator = self._negotiator = client.conversations(fallback=fallback)
        return negotiator

    def _complete(self, payload: dict[str, Any]) -> PromptResponse:
        return self._conversations.complete(payload)

    async def _acomplete(self, payload: dict[str, Any]) -> PromptResponse:
        return await self._conversations.acomplete(payload)

    def _events(self, payload: dict[str, Any]) -> Iterator[StreamEvent]:
        return self._conversations.stream(payload)

    def _aevents(self, payload: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        return self._conversations.astream(payload)

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
        text, finish = StopGuard(stops).whole(reply.prompt, reply.finish_reason)
        metadata = {**self._response_metadata(finish, reply.model), **served_by(reply)}
        reasoning = reply.reasoning if isinstance(reply, Reply) else None
        tool_calls, invalid_tool_calls = read_tool_calls(reply)
        message = AIMessage(
            content=text,
            additional_kwargs={REASONING_KEY: reasoning} if reasoning else {},
            tool_calls=tool_calls,
            invalid_tool_calls=invalid_tool_calls,
            usage_metadata=usage_metadata_of(reply.usage),
            response_metadata=metadata,
        )
        llm_output: dict[str, Any] = {"model_name": metadata.get("model_name")}
        if reply.usage is not None:
            llm_output["token_usage"] = token_usage(reply.usage)
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
        counted_any = False
        for output in llm_outputs:
            if not output:
                continue
            if counted := output.get("token_usage"):
                usage.prompt_tokens += counted["prompt_tokens"]
                usage.completion_tokens += counted["completion_tokens"]
                counted_any = True
            model = model or output.get("model_name")
        # No reply counted (a server that sends no usage): none, not zero tokens.
        return {"token_usage": token_usage(usage) if counted_any else {}, "model_name": model}

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
        reader = _ChunkReader(stops, self._response_metadata)
        for event in self._events(self._payload(messages, stops, kwargs)):
            if chunk := reader.read(event):
                yield chunk
            if reader.done:
                return

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        stops = self._stops(stop)
        reader = _ChunkReader(stops, self._response_metadata)
        async for event in self._aevents(self._payload(messages, stops, kwargs)):
            if chunk := reader.read(event):
                yield chunk
            if reader.done:
                return

    # -- tools and structured output (protocol v1.2) -------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: dict[str, Any] | type | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with ``tools`` offered on every call.

        ``tools``: LangChain tools, pydantic models, TypedDicts, functions or OpenAI tool dicts
        (anything ``convert_to_openai_tool`` takes). ``tool_choice``: ``"auto"`` (the default:
        the model decides), ``"none"``, ``"required"`` (or ``"any"``, or ``True``: some tool must
        be called), a tool's name, or ``{"type": "function", "function": {"name": ...}}``.
        ``response_format``: a schema for the reply when it does not call a tool.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        names = [tool["function"]["name"] for tool in formatted]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = protocol_tool_choice(tool_choice, names)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        if response_format is not None:
            kwargs["response_format"] = response_format_of(response_format, strict=strict)
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """This model answering objects of ``schema`` (a pydantic model, a TypedDict or a JSON
        Schema dict): pydantic models come back validated, the others as dicts.

        ``method``: ``"json_schema"`` (the default: the reply is constrained to the schema by a
        ``response_format``), ``"function_calling"`` (the schema is a tool the model must call)
        or ``"json_mode"`` (any JSON object; the prompt must describe the schema). With
        ``include_raw`` the result is ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``
        and a reply that does not parse is reported there instead of raised.
        """
        if method != "json_mode" and schema is None:
            raise ValueError(f"with_structured_output(method={method!r}) needs a schema")
        if strict is not None and method == "json_mode":
            raise ValueError("strict does not apply to method='json_mode'")
        pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)
        traced = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        llm: Runnable[LanguageModelInput, BaseMessage]
        parser: Runnable[Any, Any]
        if method == "function_calling":
            assert schema is not None
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema],
                tool_choice=name,
                strict=strict,
                ls_structured_output_format=traced,
                **kwargs,
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic_schema
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method == "json_schema":
            assert schema is not None
            llm = self.bind(
                response_format=response_format_of(schema, strict=strict),
                ls_structured_output_format=traced,
                **kwargs,
            )
            parser = (
                PydanticOutputParser(pydantic_object=schema)
                if pydantic_schema
                else JsonOutputParser()
            )
        elif method == "json_mode":
            llm = self.bind(
                response_format={"type": "json_object"},
                ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
                **kwargs,
            )
            parser = (
                PydanticOutputParser(pydantic_object=schema)
                if pydantic_schema
                else JsonOutputParser()
            )
        else:
            raise ValueError(
                f"method must be 'json_schema', 'function_calling' or 'json_mode', not {method!r}"
            )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [unparsed], exception_key="parsing_error"
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
        config sets its own ``max_concurrency``); with ``return_exceptions``, each failed one
        comes back as its own error, the others as their answers."""
        limit = int(self.max_concurrency or 1)
        return batch_each(
            self, inputs, config, limit, return_exceptions=return_exceptions, **kwargs
        )

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        limit = int(self.max_concurrency or 1)
        return await abatch_each(
            self, inputs, config, limit, return_exceptions=return_exceptions, **kwargs
        )


class _ChunkReader:
    """One stream's events as chat chunks, with no I/O: ``_stream`` and ``_astream`` only move
    the events (as ``promptwire.client._transport`` shares its exchange between its sync and async
    shells).
    """

    def __init__(
        self, stops: list[str] | None, metadata: Callable[[Any, str | None], dict[str, Any]]
    ) -> None:
        self._metadata = metadata
        self._guard = StopGuard(stops)
        self.done = False
        """The last chunk was read: the stream has nothing more to say."""

    def read(self, event: StreamEvent) -> ChatGenerationChunk | None:
        """The chunk an event makes, if any (text that could begin a stop sequence is held)."""
        if isinstance(event, ReasoningDelta):
            return reasoning_chunk(event.text)
        if isinstance(event, StreamToolCall):
            return tool_call_piece_chunk(event)
        if isinstance(event, StreamDone):
            self.done = True
            return self._last_chunk(event)
        if text := self._guard.feed(event.text):
            return ChatGenerationChunk(message=AIMessageChunk(content=text))
        return None

    def _last_chunk(self, done: StreamDone) -> ChatGenerationChunk:
        """Held-back text, if any, with the usage and metadata of the whole reply."""
        tail, finish = self._guard.finish(done.finish_reason)
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=tail,
                usage_metadata=usage_metadata_of(done.usage),
                response_metadata={**self._metadata(finish, done.model), **served_by(done)},
                chunk_position="last",
            )
        )


__all__ = [
    "PROVIDER",
    "ChatPromptwire",
    "to_protocol_messages",
]
