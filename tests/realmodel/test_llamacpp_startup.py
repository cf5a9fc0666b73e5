"""``promptwire serve --backend llamacpp`` refuses what it cannot serve with one line naming the
file (or the setting) and the reason, and exit status 1: no uvicorn traceback, no "Application
startup failed". Run through the real CLI in a child process.

With the engine in its own process (the backend's default) the model loads there, once uvicorn
has started: its start-up lines come first, then the one error line; in-process
(``PROMPTWIRE_ENGINE_PROCESS=false``) the model loads before the server starts and the error is
the only line."""

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


def _one_error_line(status: int, lines: list[str], engine_process: bool) -> str:
    """The error line, checked: exit status 1, the only line in-process; with the engine
    process, the last one, with no traceback and no uvicorn verdict before it."""
    assert status == 1, lines
    if not engine_process:
        assert len(lines) == 1, lines
    text = "\n".join(lines)
    assert "Traceback" not in text and "Application startup failed" not in text, lines
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], lines
    return lines[-1]


ENGINE_PROCESS = pytest.mark.parametrize(
    "engine_process", [True, False], ids=["engine process", "in-process"]
)


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
@ENGINE_PROCESS
def test_a_model_file_that_cannot_load_is_one_line(
    tmp_path: Path, make: Callable[[Path], Path], reason: str, engine_process: bool
) -> None:
    path = make(tmp_path)
    status, lines = _serve(
        {
            "PROMPTWIRE_LLAMACPP__MODEL": str(path),
            "PROMPTWIRE_ENGINE_PROCESS": str(engine_process).lower(),
        }
    )
    line = _one_error_line(status, lines, engine_process)
    assert str(path) in line and reason in line


@ENGINE_PROCESS
def test_a_context_too_large_for_memory_is_one_line(engine_process: bool) -> None:
    """2^20 tokens for each of 256 sequences: 5,760 GiB of SmolLM2 cache, refused from the
    model's shape before llama.cpp tries (it spends minutes and gigabytes on the cells' own
    bookkeeping first)."""
    status, lines = _serve(
        {
            "PROMPTWIRE_LLAMACPP__CONTEXT_SIZE": str(1 << 20),
            "PROMPTWIRE_LLAMACPP__PARALLEL": "256",
            "PROMPTWIRE_LLAMACPP__BATCH_SIZE": "256",
            "PROMPTWIRE_ENGINE_PROCESS": str(engine_process).lower(),
        }
    )
    line = _one_error_line(status, lines, engine_process)
    assert "GiB" in line and "more than this machine's" in line
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in line


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
