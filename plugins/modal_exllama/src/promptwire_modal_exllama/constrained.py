"""Constrained decoding: replies that must be JSON valid against a schema (``response_format``,
and tool calls a request requires), by lm-format-enforcer on ExLlamaV2's sampler.

lm-format-enforcer's ``TokenEnforcer`` reads the JSON Schema (``JsonSchemaParser``) and, after
every token, says which tokens may come next; its exllamav2 integration builds the tokenizer
data it needs from ``ExLlamaV2Tokenizer`` (``build_token_enforcer_tokenizer_data``). Its
``ExLlamaV2TokenEnforcerFilter`` predates the filter interface of exllamav2 0.3's sampler (which
asks every filter ``can_mask_logits``, ``get_next``, ``background_drop``, ...) and iterates a
token list type its own library no longer makes iterable, so ``EnforcerFilter`` here is that
filter on exllamav2's own ``ExLlamaV2Filter`` base: the same enforcer, the interface the sampler
calls. It runs in the generator's filter thread pool while the forward pass runs.

Imported only when a constrained request arrives: exllamav2, torch and lm-format-enforcer stay
out of every other import path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def tokenizer_data(tokenizer: Any, eos_token_ids: Iterable[int]) -> Any:
    """What the enforcer needs to know of the tokenizer (seconds for a 128k vocabulary: built
    once per model, in a worker thread). Every end-of-sequence token may end a reply."""
    from lmformatenforcer.integrations.exllamav2 import build_token_enforcer_tokenizer_data

    data = build_token_enforcer_tokenizer_data(tokenizer)
    data.eos_token_id = sorted({*eos_token_ids, int(tokenizer.eos_token_id)})
    return data


def json_filter(model: Any, tokenizer: Any, data: Any, schema: Mapping[str, Any] | None) -> Any:
    """A filter that lets the sampler write only JSON valid against ``schema`` (None: any
    JSON object), then an end-of-sequence token."""
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    parser = JsonSchemaParser(dict(schema) if schema is not None else None)
    return _filter_class()(model, tokenizer, TokenEnforcer(data, parser))


_FILTER_CLASS: Any = None


def _filter_class() -> Any:
    global _FILTER_CLASS
    if _FILTER_CLASS is not None:
        return _FILTER_CLASS
    from exllamav2.generator.filters import ExLlamaV2Filter

    class EnforcerFilter(ExLlamaV2Filter):  # type: ignore[misc]
        """lm-format-enforcer's token enforcer as an exllamav2 0.3 sampler filter."""

        def __init__(self, model: Any, tokenizer: Any, enforcer: Any) -> None:
            super().__init__(model, tokenizer)
            self.enforcer = enforcer
            self.tokens: list[int] = []

        def clone(self, c: Any = None) -> Any:
            copy = EnforcerFilter(self.model, self.tokenizer, self.enforcer)
            copy.tokens = list(self.tokens)
            return copy

        def begin(self, prefix_str: str) -> None:
            self.tokens = []

        def feed(self, token: Any) -> None:
            self.tokens.append(int(token.reshape(-1)[0]))

        def next(self) -> tuple[list[int], list[int]]:
            # Sorted: the sampler's logit_filter_exclusive walks a list of ids in order (it
            # sorts only sets), and an unsorted list lets tokens through.
            allowed = self.enforcer.get_allowed_tokens(self.tokens).allowed_tokens
            return sorted(allowed), []

        def use_background_worker(self) -> bool:
            return True

    _FILTER_CLASS = EnforcerFilter
    return EnforcerFilter
