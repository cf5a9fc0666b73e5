"""The backend's settings: environment names, validation, and the trip into a Modal container."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from promptwire.plugins import get_backend
from promptwire_modal_exllama.settings import (
    CacheMode,
    ExllamaSettings,
    container_environment,
)
from pydantic import ValidationError


def test_defaults_name_a_real_exl2_model_and_a_sane_deployment() -> None:
    settings = ExllamaSettings()
    assert (settings.hf_repo, settings.hf_revision) == (
        "turboderp/Llama-3.1-8B-Instruct-exl2",
        "4.0bpw",
    )
    assert settings.cache_mode is CacheMode.FP16
    assert settings.cache_size % 256 == 0
    assert settings.api_key_secret == "promptwire-api-key"
    assert settings.volume_model_dir() == PurePosixPath(
        "/models/turboderp/Llama-3.1-8B-Instruct-exl2/4.0bpw"
    )
    assert settings.display_name() == "turboderp/Llama-3.1-8B-Instruct-exl2@4.0bpw"


def test_the_environment_sets_each_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_MODAL_EXLLAMA__CACHE_MODE", "q6")
    monkeypatch.setenv("PROMPTWIRE_MODAL_EXLLAMA__CACHE_SIZE", "5000")
    monkeypatch.setenv("PROMPTWIRE_MODAL_EXLLAMA__GPU", "H100")
    monkeypatch.setenv("PROMPTWIRE_MODAL_EXLLAMA__REQUEST_PARAMS", '{"top_k": 40}')
    monkeypatch.setenv("PROMPTWIRE_MODAL_EXLLAMA__API_KEY_SECRET", "")
    settings = ExllamaSettings()
    assert settings.cache_mode is CacheMode.Q6
    assert settings.cache_size == 5120  # whole cache pages
    assert settings.gpu == "H100"
    assert settings.request_params == {"top_k": 40}
    assert settings.api_key_secret is None  # empty: an open endpoint


def test_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_MODAL_EXLLAMA__MODEL_DIR", "/from/env")
    backend = get_backend("modal_exllama").backend
    settings = backend.load_settings(model_dir="/from/cli")
    assert isinstance(settings, ExllamaSettings)
    assert settings.model_dir == Path("/from/cli")
    assert settings.display_name() == "cli"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cache_mode", "Q3"),
        ("temperature", -1),
        ("top_p", 0),
        ("max_inputs", 0),
        ("scaledown_window", 1),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        ExllamaSettings(**{field: value})


def test_a_context_larger_than_the_cache_is_refused() -> None:
    with pytest.raises(ValidationError, match="raise cache_size or lower max_seq_len"):
        ExllamaSettings(cache_size=4096, max_seq_len=8192)


def test_the_container_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = ExllamaSettings(
        cache_mode="Q4",
        max_seq_len=4096,
        max_containers=None,
        api_key_secret="",
        hf_token_secret="hf",
        proxy_auth=True,
        model_dir="/local/only",
        request_params={"top_k": 3},
    )
    env = container_environment(deployed)
    assert not any(key.endswith(("MODEL_DIR", "REQUEST_PARAMS")) for key in env)
    for key, value in env.items():
        monkeypatch.setenv(key, value or "")
    in_container = ExllamaSettings()
    assert in_container.model_dump(exclude={"model_dir", "request_params"}) == deployed.model_dump(
        exclude={"model_dir", "request_params"}
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_containers": 2, "max_containers": 1}, r"min_containers \(2\) is larger than max"),
        ({"target_inputs": 65}, r"target_inputs \(65\) is larger than max_inputs \(64\)"),
        ({"target_inputs": 9, "max_inputs": 8}, r"lower TARGET_INPUTS or raise MAX_INPUTS"),
    ],
)
def test_scaling_modal_refuses_is_refused_here(values: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExllamaSettings(**values)


def test_scaling_modal_accepts_is_accepted() -> None:
    ExllamaSettings(min_containers=3, max_containers=3, target_inputs=64)
    ExllamaSettings(min_containers=5, max_containers=None)  # no limit


def test_a_batch_size_the_generator_cannot_run_is_refused_up_front() -> None:
    """ExLlamaV2's dynamic generator needs max_batch_size x 8 tokens in one forward pass of at
    most 2048: 300 used to pass here and crash after the model was loaded (on Modal, at every
    cold start)."""
    assert ExllamaSettings(max_batch_size=256).max_batch_size == 256
    with pytest.raises(ValidationError, match="runs at most 256 sequences at once"):
        ExllamaSettings(max_batch_size=300)
