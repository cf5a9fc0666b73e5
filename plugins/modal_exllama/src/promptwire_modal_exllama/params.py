"""The protocol's generation parameters mapped to the ExLlamaV2 sampler and job, as plain data.

Kept apart from the engine so the mapping and the context-length rules are checked on any
machine: nothing here imports exllamav2 or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from promptwire.engine import RequestRejected
from promptwire.protocol import PromptRequest

from promptwire_modal_exllama.settings import ExllamaSettings


@dataclass(frozen=True)
class SamplingParams:
    """What one generation job is asked to do."""

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    stop: tuple[str, ...] = ()
    seed: int | None = None
    max_tokens_explicit: bool = False
    """Whether the request set ``max_tokens`` (then it is never shortened to fit the context)."""
    constrained: bool = False
    """The reply must be JSON (then an end-of-sequence token), by constrained decoding."""
    json_schema: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    """The schema a constrained reply must be valid against; None: any JSON object."""
    decode_special_tokens: bool = False
    """Special tokens generated go into the text (a tool-call format whose markers are ones)."""

    def sampler_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``ExLlamaV2Sampler.Settings``.

        Its conventions match the protocol's: a temperature below 0.01 samples greedily,
        ``top_k=0`` and ``top_p=1.0`` switch those filters off.
        """
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "token_repetition_penalty": self.repetition_penalty,
        }

    def stop_conditions(self, eos_token_ids: frozenset[int]) -> list[str | int]:
        """Stop strings from the request plus the model's end-of-sequence tokens."""
        return [*self.stop, *sorted(eos_token_ids)]


def sampling_params(request: PromptRequest, settings: ExllamaSettings) -> SamplingParams:
    """The request's parameters, with the backend's defaults for those it leaves out."""
    return SamplingParams(
        max_new_tokens=request.max_tokens
        if request.max_tokens is not None
        else settings.max_tokens,
        temperature=request.temperature
        if request.temperature is not None
        else settings.temperature,
        top_p=request.top_p if request.top_p is not None else settings.top_p,
        top_k=request.top_k if request.top_k is not None else settings.top_k,
        repetition_penalty=settings.repetition_penalty,
        stop=tuple(dict.fromkeys(request.stop or ())),
        seed=request.seed,
        max_tokens_explicit=request.max_tokens is not None,
    )


def fit_to_context(params: SamplingParams, prompt_tokens: int, max_seq_len: int) -> SamplingParams:
    """Check that prompt plus completion fit in one sequence, before anything reaches the GPU.

    A prompt that leaves no room is refused (422). An explicit ``max_tokens`` that does not fit is
    refused too; the default one is shortened to the room left, and the reply then ends with
    ``finish_reason: length``.
    """
    if prompt_tokens < 1:
        raise RequestRejected("the prompt is empty after tokenization")
    room = max_seq_len - prompt_tokens
    if room < 1:
        raise RequestRejected(
            f"the prompt is {prompt_tokens} tokens long; this model's context holds "
            f"{max_seq_len} tokens, prompt and completion together"
        )
    if params.max_new_tokens <= room:
        return params
    if params.max_tokens_explicit:
        raise RequestRejected(
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({params.max_new_tokens}) is "
            f"more than this model's context of {max_seq_len} tokens; ask for at most "
            f"{room} tokens or shorten the prompt"
        )
    return replace(params, max_new_tokens=room)
