"""Finding text with no UTF-8 form in a JSON value.

JSON may escape a lone surrogate (``"\\ud800"``); Python decodes it into a ``str`` that no
encoder can write back. The client refuses to send one and the server refuses to take one, each
saying where it is without repeating the text (a prompt may hold what should not reach a log).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoneSurrogate:
    """Where a lone surrogate is: a path like ``messages[1].content`` ("" for the value itself;
    ``metadata.<key>`` when it is in a key), the character's index, and its code point."""

    path: str
    index: int
    code: int

    def described(self) -> str:
        """Where it is and what it is, in the words both sides use."""
        where = self.path or "the body"
        return f"{where}, at character {self.index}, holds U+{self.code:04X}, a lone surrogate"


def lone_surrogate(value: Any, path: str = "") -> LoneSurrogate | None:
    """The first lone surrogate in ``value`` (strings, mappings' keys and values, lists)."""
    if isinstance(value, str):
        for index, char in enumerate(value):
            if "\ud800" <= char <= "\udfff":
                return LoneSurrogate(path, index, ord(char))
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            inside = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (found := lone_surrogate(key, _joined(path, "<key>"))):
                return found
            if found := lone_surrogate(item, inside):
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if found := lone_surrogate(item, f"{path}[{index}]"):
                return found
    return None


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
