"""A greedy reply's tokens are read straight from the logits (``LlamaRuntime.most_likely``),
not through llama.cpp's sampler chain: here, on SmolLM2, every pick of several replies at once
is checked against the greedy chain's own pick on the same logits."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import REAL_MODEL

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire.engine import TextChunk
from promptwire_llamacpp.runtime import LlamaRuntime, SamplerConfig
from promptwire_llamacpp.scheduler import Job, Scheduler
from promptwire_llamacpp.settings import LlamaCppSettings

pytestmark = REAL_MODEL

REQUESTS = 3
TOKENS = 24
GREEDY = SamplerConfig(temperature=0.0, top_p=1.0, top_k=0, seed=None)


@pytest.fixture(scope="module")
def runtime() -> Iterator[LlamaRuntime]:
    runtime = LlamaRuntime(LlamaCppSettings(parallel=REQUESTS, context_size=256, threads=1))
    yield runtime
    runtime.close()


def test_the_most_likely_token_is_the_greedy_chains_pick(
    runtime: LlamaRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = runtime.new_sampler(GREEDY)
    picks: list[tuple[int, int]] = []
    most_likely = runtime.most_likely

    def checked(index: int) -> int:
        token = most_likely(index)
        picks.append((token, runtime.sample(chain, index)))
        return token

    monkeypatch.setattr(runtime, "most_likely", checked)
    scheduler = Scheduler(runtime, max_waiting=REQUESTS)
    texts = ["", "", ""]
    scheduler._open()  # this thread is the scheduler's: no thread of its own is started
    try:
        for index, question in enumerate(
            ["The capital of France is", "Once upon a time", "1, 2, 3, 4,"]
        ):
            tokens = runtime.tokenize(question, add_special=True)
            job = Job(tokens, GREEDY, max_new_tokens=TOKENS, handed_off=True)

            def collect(event: object, index: int = index) -> None:
                if isinstance(event, TextChunk):
                    texts[index] += event.text

            job.direct = collect
            scheduler._accept(job)
        while scheduler._busy():
            scheduler._step()
    finally:
        scheduler._close()
        runtime.free_sampler(chain)
    assert all(texts)
    assert len(picks) >= REQUESTS * 2
    assert [chosen for chosen, _ in picks] == [greedy for _, greedy in picks]


@pytest.mark.parametrize(
    ("config", "plain"),
    [
        (GREEDY, True),
        (SamplerConfig(temperature=0.005, top_p=0.5, top_k=3, seed=1), True),
        (SamplerConfig(temperature=0.7, top_p=1.0, top_k=0, seed=None), False),
        (dataclasses.replace(GREEDY, repeat_penalty=1.1), False),
        (dataclasses.replace(GREEDY, grammar="root ::= [a]"), False),
    ],
)
def test_only_a_chain_of_greedy_alone_is_read_from_the_logits(
    config: SamplerConfig, plain: bool
) -> None:
    assert config.plain_greedy is plain
