"""What the engine decides before loading a model, as pure functions (no torch, no GPU): the
attention mode from the machine's GPUs and flash-attn, and the model's batch rows from
max_batch_size. The CPU tier checks the same decisions through exllamav2 itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from promptwire_modal_exllama.runtime import GpuPlatform, paged_attention_problem, raise_batch_rows

L40S, H100, T4 = (8, 9), (9, 0), (7, 5)


@pytest.mark.parametrize(
    ("platform", "problem"),
    [
        (GpuPlatform((L40S,), "2.8.3", None), None),
        (GpuPlatform((H100, H100), "2.5.7", None), None),
        (GpuPlatform((L40S,), None, None), "flash-attn is not installed"),
        (GpuPlatform((L40S,), "2.5.6", None), "flash-attn 2.5.6 is older than 2.5.7"),
        (GpuPlatform((L40S,), "2.4.2.post1", None), "older than 2.5.7"),
        (GpuPlatform((T4,), "2.8.3", None), "not compute capability 7.5"),
        (GpuPlatform((H100, T4), "2.8.3", None), "not compute capability 7.5"),
        (
            GpuPlatform((L40S,), None, "flash-attn is installed but does not import (...)"),
            "does not import",
        ),
    ],
    ids=["l40s", "two-h100", "absent", "too-old", "post-release", "t4", "mixed", "broken"],
)
def test_paged_attention_needs_flash_attn_on_ampere_or_newer(
    platform: GpuPlatform, problem: str | None
) -> None:
    found = paged_attention_problem(platform)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def _config(max_seq_len: int) -> SimpleNamespace:
    return SimpleNamespace(max_input_len=2048, max_batch_size=1, max_seq_len=max_seq_len)


def test_batch_rows_are_left_alone_when_they_fit() -> None:
    config = _config(8192)
    assert not raise_batch_rows(config, 256)  # 256 x 8 = 2048 = 2048 x 1
    assert config.max_batch_size == 1


@pytest.mark.parametrize(("max_seq_len", "batch", "rows"), [(512, 200, 4), (256, 256, 8)])
def test_a_short_context_gets_more_batch_rows(max_seq_len: int, batch: int, rows: int) -> None:
    """load_autosplit caps max_input_len at max_seq_len: the generator's batch x 8 tokens must
    then fit in more rows of it."""
    config = _config(max_seq_len)
    assert raise_batch_rows(config, batch)
    assert config.max_batch_size == rows
    assert config.max_batch_size * min(config.max_input_len, max_seq_len) >= batch * 8
