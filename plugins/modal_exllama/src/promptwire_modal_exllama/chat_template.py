"""The model's own chat template: how ``messages`` (protocol v1.1) become the prompt.

A Hugging Face model directory ships its template as Jinja, in ``chat_template.jinja`` (newer
repositories; it wins, as in ``transformers``) or under ``chat_template`` in
``tokenizer_config.json`` — a string, or a list of ``{"name", "template"}`` of which ``"default"``
is used. It is rendered by ``promptwire.engine.hf_chat_template`` as ``transformers``'
``apply_chat_template`` does, with the tokenizer's special tokens (``bos_token``, ``eos_token``,
... written as strings or as ``{"content": ...}`` objects).

BOS: a template usually writes ``{{ bos_token }}`` itself, and ExLlamaV2's tokenizer would add
another one in front when asked to (``add_bos``), or even where the model has none to speak of
(Qwen's config names ``<|endoftext|>`` as its BOS). Like ``apply_chat_template(tokenize=True)``,
which encodes with ``add_special_tokens=False``, the engine takes the template at its word: a
prompt it rendered is encoded without an added BOS and with its special tokens read as such
(``ExllamaRuntime.encode(prompt, from_template=True)``), so the prompt holds exactly the BOS
tokens the template wrote — one for Llama 3, none for Qwen. Prompts sent as ``prompt`` are
unchanged: a BOS is added unless they start with one.

Pure Python (jinja2 only): no exllamav2 or torch, so it is tested on any machine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from promptwire.engine.hf_chat_template import (
    SPECIAL_TOKEN_KEYS,
    ChatTemplate,
    ChatTemplateError,
    token_text,
)

logger = logging.getLogger(__name__)

TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
DEFAULT_TEMPLATE_NAME = "default"

__all__ = ["ChatTemplate", "ChatTemplateError", "load_chat_template"]


def _read_tokenizer_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / TOKENIZER_CONFIG
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChatTemplateError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ChatTemplateError(f"{path} is not a JSON object")
    return config


def _read_template_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatTemplateError(f"cannot read {path}: {exc}") from exc


def _template_from_config(config: dict[str, Any]) -> str | None:
    """``chat_template`` as a string, or the ``"default"`` entry of a list of named templates."""
    value = config.get("chat_template")
    if isinstance(value, str):
        return value or None
    if isinstance(value, list):
        named = {
            entry.get("name"): entry.get("template")
            for entry in value
            if isinstance(entry, dict) and isinstance(entry.get("template"), str)
        }
        if DEFAULT_TEMPLATE_NAME in named:
            return named[DEFAULT_TEMPLATE_NAME]
        if named:
            logger.warning(
                "%s has chat templates %s but none named %r; not using them",
                TOKENIZER_CONFIG,
                sorted(str(name) for name in named),
                DEFAULT_TEMPLATE_NAME,
            )
    return None


def load_chat_template(model_dir: Path | None) -> ChatTemplate | None:
    """The chat template in ``model_dir``, or None when it has none.

    Raises ``ChatTemplateError`` when there is one that cannot be read or compiled.
    """
    if model_dir is None:
        return None
    config = _read_tokenizer_config(model_dir)
    special_tokens = {
        key: text for key in SPECIAL_TOKEN_KEYS if (text := token_text(config.get(key)))
    }
    text, source = _read_template_file(model_dir / TEMPLATE_FILE), TEMPLATE_FILE
    if not text:
        text, source = _template_from_config(config), TOKENIZER_CONFIG
    if not text:
        return None
    return ChatTemplate.from_string(text, source=source, special_tokens=special_tokens)
