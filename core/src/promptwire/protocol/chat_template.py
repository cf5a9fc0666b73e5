"""The plain chat template: a conversation as one prompt, for models without a template of their
own (the default of ``Engine.render_chat``) and for the ``prompt`` a v1.1 client sends alongside
``messages``, so that a v1 server, which ignores ``messages``, still gets the whole conversation.

    System: You are terse.

    User: Hello

    Assistant:

v1.2: a tool result is a ``Tool:`` turn; a tool call of an assistant turn is a line
``Tool call <id>: <name> <arguments>`` after its text.
"""

from __future__ import annotations

from collections.abc import Iterable

from promptwire.protocol import ChatMessage

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
GENERATION_PROMPT = "Assistant:"
TURN_SEPARATOR = "\n\n"


def render_plain(messages: Iterable[ChatMessage]) -> str:
    """Each message as ``<Role>: <content>``, separated by a blank line, then ``Assistant:``."""
    turns = [_turn(message) for message in messages]
    turns.append(GENERATION_PROMPT)
    return TURN_SEPARATOR.join(turns)


def _turn(message: ChatMessage) -> str:
    text = f"{ROLE_LABELS[message.role]}: {message.content}"
    for call in message.tool_calls or ():
        text += f"\nTool call {call.id}: {call.function.name} {call.function.arguments}"
    return text


__all__ = [
    "GENERATION_PROMPT",
    "ROLE_LABELS",
    "TURN_SEPARATOR",
    "render_plain",
]
