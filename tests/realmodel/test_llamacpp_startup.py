"""``promptwire serve --backend llamacpp`` refuses what it cannot serve with one line naming the
file (or the setting) and the reason, and exit status 1: no uvicorn traceback, no "Application
startup failed". Run through the real CLI in a child process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.installed_plugin import run_cli
from tests.support.real_model import REAL_MODEL, smollm2_path

pytestmark = REAL_MODEL


def _serve(env: dict[str, str]) -> tuple[int, list[str]]:
    result = run_cli("serve", "--backend", "llamacpp", "--port", "0", env=env, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode, lines


def _truncated(tmp_path: Path) -> Path:
    model = smollm2_path()
    assert model is not None
    path = tmp_path / "truncated.gguf"
    with model.open("rb") as source:
        path.write_bytes(source.read(model.stat().st_size // 2))
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "absent.gguf"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "model.gguf").mkdir()
    return tmp_path / "model.gguf"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty.gguf").write_bytes(b"")
    return tmp_path / "empty.gguf"


def _not_gguf(tmp_path: Path) -> Path:
    (tmp_path / "model.gguf").write_text("<html>a download that went wrong</html>")
    return tmp_path / "model.gguf"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_missing, "no GGUF model file at"),
        (_directory, "is a directory, not a GGUF model file"),
        (_empty, "is empty (0 bytes), not a GGUF model file"),
        (_not_gguf, "is not a GGUF model file (it does not begin with 'GGUF')"),
        (_truncated, "data is not within the file bounds"),
    ],
)
def test_a_model_file_that_cannot_load_is_one_line(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    status, lines = _serve({"PROMPTWIRE_LLAMACPP__MODEL": str(path)})
    assert status == 1, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and str(path) in lines[0] and reason in lines[0]


def test_a_context_too_large_for_memory_is_one_line() -> None:
    """2^20 tokens for each of 256 sequences: 5,760 GiB of SmolLM2 cache, refused from the
    model's shape before llama.cpp tries (it spends minutes and gigabytes on the cells' own
    bookkeeping first)."""
    status, lines = _serve(
        {
            "PROMPTWIRE_LLAMACPP__CONTEXT_SIZE": str(1 << 20),
            "PROMPTWIRE_LLAMACPP__PARALLEL": "256",
            "PROMPTWIRE_LLAMACPP__BATCH_SIZE": "256",
        }
    )
    assert status == 1, lines
    assert len(lines) == 1, lines
    assert "GiB" in lines[0] and "more than this machine's" in lines[0]
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in lines[0]


@pytest.mark.parametrize(("parallel", "batch_size"), [("17", "16"), ("129", None), ("256", None)])
def test_more_sequences_than_a_batch_holds_is_one_line(
    parallel: str, batch_size: str | None
) -> None:
    """llama.cpp reserves outputs for ``batch_size`` tokens of a forward pass, and each step
    puts one token of every sequence in it: more sequences aborted at start on
    ``GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)``."""
    env = {"PROMPTWIRE_LLAMACPP__PARALLEL": parallel}
    if batch_size is not None:
        env["PROMPTWIRE_LLAMACPP__BATCH_SIZE"] = batch_size
    status, lines = _serve(env)
    assert status == 1, lines
    assert len(lines) == 1, lines
    assert f"parallel ({parallel}) is more than batch_size ({batch_size or 128})" in lines[0]
