"""Protocol parameters → sampler and job, and the context-length rules (no exllamav2 needed)."""

from __future__ import annotations

import pytest
from promptwire.engine import RequestRejected
from promptwire.protocol import PromptRequest
from promptwire_modal_exllama.params import SamplingParams, fit_to_context, sampling_params
from promptwire_modal_exllama.settings import ExllamaSettings


def test_request_values_win_over_the_backend_defaults() -> None:
    request = PromptRequest(
        prompt="p", max_tokens=7, temperature=0.2, top_p=0.5, top_k=40, stop=["\n"], seed=3
    )
    params = sampling_params(request, ExllamaSettings(repetition_penalty=1.1))
    assert params == SamplingParams(
        max_new_tokens=7,
        temperature=0.2,
        top_p=0.5,
        top_k=40,
        repetition_penalty=1.1,
        stop=("\n",),
        seed=3,
        max_tokens_explicit=True,
    )


def test_left_out_values_come_from_the_settings() -> None:
    settings = ExllamaSettings(max_tokens=99, temperature=0.9, top_p=0.8, top_k=5)
    params = sampling_params(PromptRequest(prompt="p"), settings)
    assert (params.max_new_tokens, params.temperature, params.top_p, params.top_k) == (
        99,
        0.9,
        0.8,
        5,
    )
    assert params.stop == () and params.seed is None and not params.max_tokens_explicit


def test_the_sampler_gets_the_exllamav2_field_names() -> None:
    params = sampling_params(
        PromptRequest(prompt="p", temperature=0.0, top_p=1.0, top_k=0), ExllamaSettings()
    )
    assert params.sampler_settings() == {
        "temperature": 0.0,  # below 0.01: greedy in ExLlamaV2
        "top_p": 1.0,  # off
        "top_k": 0,  # off
        "token_repetition_penalty": 1.0,
    }


def test_stop_conditions_are_the_stop_strings_plus_every_eos_token() -> None:
    params = sampling_params(PromptRequest(prompt="p", stop=["A", "B", "A"]), ExllamaSettings())
    assert params.stop_conditions(frozenset({128009, 128001})) == ["A", "B", 128001, 128009]


def _params(max_new_tokens: int, explicit: bool) -> SamplingParams:
    return SamplingParams(max_new_tokens, 0.7, 0.9, 0, 1.0, max_tokens_explicit=explicit)


def test_a_request_that_fits_is_unchanged() -> None:
    params = _params(100, explicit=True)
    assert fit_to_context(params, prompt_tokens=900, max_seq_len=1000) is params


def test_a_prompt_that_fills_the_context_is_refused_with_a_clear_422() -> None:
    with pytest.raises(RequestRejected) as rejected:
        fit_to_context(_params(10, explicit=False), prompt_tokens=1000, max_seq_len=1000)
    assert rejected.value.status_code == 422
    assert rejected.value.message == (
        "the prompt is 1000 tokens long; this model's context holds 1000 tokens, "
        "prompt and completion together"
    )


def test_an_explicit_max_tokens_that_does_not_fit_is_refused() -> None:
    with pytest.raises(RequestRejected) as rejected:
        fit_to_context(_params(200, explicit=True), prompt_tokens=900, max_seq_len=1000)
    assert "ask for at most 100 tokens" in rejected.value.message


def test_the_default_max_tokens_is_shortened_to_the_room_left() -> None:
    fitted = fit_to_context(_params(512, explicit=False), prompt_tokens=900, max_seq_len=1000)
    assert fitted.max_new_tokens == 100


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(RequestRejected):
        fit_to_context(_params(5, explicit=False), prompt_tokens=0, max_seq_len=1000)
