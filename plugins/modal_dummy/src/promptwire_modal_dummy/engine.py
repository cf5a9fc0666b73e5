"""The dummy engine: answers ``hello world`` (the LangChain guide's endpoint), or echoes the
prompt, word by word at a settable pace, so chains, streaming and load can be tried with no GPU.

In tool mode (``tool_mode``) it also honours protocol v1.2, so chains and agents run offline: a
request offering tools gets a call of one of them, with arguments made from the tool's JSON
Schema (``schema_instance``), and a request with a JSON ``response_format`` gets a value valid
against its schema. Which tool: the one ``tool_choice`` names; otherwise the first whose name,
or a word of its name longer than three letters (``weather`` of ``get_weather``), the last user
message mentions; else the first. After tool results, only tools not yet called in the
conversation are candidates (while there are some), so an agent that must call a tool every turn
(structured output as a tool) moves on. With ``tool_choice: "auto"`` a conversation whose last
message is a tool result is answered in text instead (the result itself), so an agent loop ends
after one round of calls.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncGenerator

from promptwire.engine import (
    Engine,
    EngineEvent,
    Finish,
    RequestRejected,
    TextChunk,
    ToolCall,
    quick_prepare,
)
from promptwire.protocol import (
    Capabilities,
    FinishReason,
    JsonSchemaFormat,
    NamedToolChoice,
    PromptRequest,
    ToolSpec,
    Usage,
)

from promptwire_modal_dummy.schema_instance import instance
from promptwire_modal_dummy.settings import DummySettings

_WORDS = re.compile(r"\s*\S+\s*|\s+")
# Without a pace, the words come as fast as the server takes them; every so many the engine
# lets the event loop run, so one long echo cannot keep health checks and other requests
# waiting (a 256 KiB stream used to hold the loop for seconds).
WORDS_PER_TURN = 32


def split_words(text: str) -> list[str]:
    """Pieces of ``text``, one word each with its surrounding spaces; joined they give it back."""
    return _WORDS.findall(text)


class DummyEngine(Engine):
    def __init__(self, settings: DummySettings | None = None) -> None:
        self.settings = settings or DummySettings()
        self.model_name = self.settings.model_name

    @property
    def capabilities(self) -> Capabilities:
        if self.settings.tool_mode:
            return Capabilities(tools=True, structured_output=True)
        return Capabilities()

    @quick_prepare  # a plain prompt is returned as it is; only tools and schemas take work
    def prepare(self, request: PromptRequest) -> PromptRequest:
        """In tool mode, a schema it cannot make a value for is refused before answering."""
        if not self.settings.tool_mode:
            return request
        try:
            if (tool := self._tool_to_call(request)) is not None:
                instance(tool.function.parameters)
            if isinstance(request.response_format, JsonSchemaFormat):
                instance(request.response_format.json_schema.json_schema)
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
            raise RequestRejected(f"the dummy engine cannot answer this schema: {exc}") from None
        return request

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        # Text only: the core's loop (Engine.generate) applies stop, max_tokens and usage.
        settings = self.settings
        if settings.first_token_delay:
            await asyncio.sleep(settings.first_token_delay)
        tool = self._tool_to_call(request) if settings.tool_mode else None
        if tool is not None:
            arguments = json.dumps(instance(tool.function.parameters, text=settings.reply))
            yield ToolCall(f"call_{uuid.uuid4().hex[:24]}", tool.function.name, arguments)
            usage = Usage(
                prompt_tokens=self.count_prompt_tokens(request),
                completion_tokens=len(arguments.split()),
            )
            yield Finish(FinishReason.TOOL_CALLS, usage)
            return
        words = split_words(self._text(request))
        interval = 1.0 / settings.tokens_per_second if settings.tokens_per_second else 0.0
        for index, word in enumerate(words):
            if index and interval:
                await asyncio.sleep(interval)
            elif index % WORDS_PER_TURN == WORDS_PER_TURN - 1:
                await asyncio.sleep(0)
            yield TextChunk(word)

    def _text(self, request: PromptRequest) -> str:
        settings = self.settings
        if settings.tool_mode:
            fmt = request.response_format
            if isinstance(fmt, JsonSchemaFormat):
                return json.dumps(instance(fmt.json_schema.json_schema, text=settings.reply))
            if request.wants_json():
                return json.dumps({"reply": settings.reply})
            last = request.messages[-1] if request.messages else None
            if last is not None and last.role == "tool":
                return last.content
        return request.prompt if settings.echo else settings.reply

    def _tool_to_call(self, request: PromptRequest) -> ToolSpec | None:
        if not request.wants_tools() or not request.tools or not request.messages:
            return None
        choice = request.tool_choice or "auto"
        if isinstance(choice, NamedToolChoice):
            return next(t for t in request.tools if t.function.name == choice.function.name)
        after_results = request.messages[-1].role == "tool"
        if choice == "auto" and after_results:
            return None  # the results are in: answer them
        candidates = list(request.tools)
        if after_results:
            called = {c.function.name for m in request.messages for c in m.tool_calls or ()}
            candidates = [t for t in candidates if t.function.name not in called] or candidates
        said = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = set(_NAME_WORDS.findall(said.lower()))
        mentioned = [t for t in candidates if _mentioned(t.function.name, said.lower(), words)]
        return (mentioned or candidates)[0]


_NAME_WORDS = re.compile(r"[a-z0-9]+")


def _mentioned(name: str, said: str, words: set[str]) -> bool:
    name = name.lower()
    return name in said or any(len(w) > 3 and w in words for w in _NAME_WORDS.findall(name))
