"""Chat templates as Hugging Face models ship them: Jinja, rendered as ``transformers`` does.

A model's chat template (from its ``tokenizer_config.json``, a ``chat_template.jinja`` file or
a GGUF file's ``tokenizer.chat_template``) turns ``messages`` into the prompt the model was
trained on. It is rendered the way ``transformers``' ``apply_chat_template`` does: a sandboxed,
immutable Jinja environment with ``trim_blocks`` and ``lstrip_blocks``, the ``raise_exception``
and ``strftime_now`` globals, a ``tojson`` that does not escape HTML, the ``loopcontrols``
extension and a ``{% generation %}`` block that only renders its body; the context holds
``messages``, ``add_generation_prompt=True`` and the tokenizer's special tokens (``bos_token``,
``eos_token``, ...). Engines whose model has a template use it in ``Engine.render_chat``.

Needs jinja2 (the ``server`` extra); not imported by ``import promptwire``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptwire.engine import EngineError, RequestRejected
from promptwire.protocol import ChatMessage, ToolSpec

logger = logging.getLogger(__name__)

#: The special tokens of ``tokenizer_config.json`` a template may use, as ``transformers`` passes.
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token")


class ChatTemplateError(EngineError):
    """A model's chat template cannot be read or compiled (a broken model)."""


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks in
    ``transformers``; for inference it renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def token_text(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template and the special tokens it is rendered with."""

    source: str
    """Where it came from, for logs (a file name, or the GGUF metadata key)."""
    template: jinja2.Template = field(repr=False)
    special_tokens: dict[str, str] = field(default_factory=dict)
    text: str = field(default="", repr=False)
    """The template's Jinja source (which tool-call format the model writes is read from it)."""

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @classmethod
    def from_string(
        cls, text: str, *, source: str = "string", special_tokens: dict[str, str] | None = None
    ) -> ChatTemplate:
        try:
            template = _environment().from_string(text)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(
                f"the chat template in {source} is not valid Jinja: {exc}"
            ) from exc
        return cls(source, template, dict(special_tokens or {}), text)

    def render(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] | None = None
    ) -> str:
        """The prompt for ``messages`` (and the ``tools`` offered, v1.2), ending with the
        assistant's turn opened.

        Tool calls and results are given to the template as ``transformers`` gives them: an
        assistant message's ``tool_calls`` with their arguments as an object, a tool message
        with its ``tool_call_id``; ``tools`` in OpenAI's shape. A template that refuses the
        conversation (``raise_exception``, say "roles must alternate") or fails on it is a
        ``RequestRejected`` (422) carrying its message.
        """
        conversation = [_message(m) for m in messages]
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = [tool.model_dump(exclude_none=True) for tool in tools]
        try:
            return self.template.render(
                messages=conversation, add_generation_prompt=True, **self.special_tokens, **extra
            )
        except jinja2.TemplateError as exc:
            raise RequestRejected(
                f"the model's chat template refused the conversation: {exc}"
            ) from None
        except Exception as exc:  # the template's own code failed on this conversation
            logger.warning("the chat template failed: %s: %s", type(exc).__name__, exc)
            raise RequestRejected(
                f"the model's chat template cannot render this conversation "
                f"({type(exc).__name__}: {exc})"
            ) from None


def _message(message: ChatMessage) -> dict[str, Any]:
    turn: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        turn["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        turn["tool_call_id"] = message.tool_call_id
    return turn


def _arguments(text: str) -> Any:
    """A call's arguments as an object, as templates expect (the text if it is not JSON)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = ["SPECIAL_TOKEN_KEYS", "ChatTemplate", "ChatTemplateError", "token_text"]
