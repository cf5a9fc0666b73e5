"""A stand-in for ExLlamaV2's dynamic generator, for the CPU tests of the batching engine.

ExLlamaV2 cannot run without CUDA, so these tests drive the real engine (threading, streaming,
cancellation, recovery) with a generator that has the same interface and result dicts: jobs wait
in ``pending`` until the next ``iterate()``, which then adds one token to every active job — all
of them in the same step, as continuous batching does. The GPU tests use the real one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from promptwire_modal_exllama.engine import BatchingEngine
from promptwire_modal_exllama.generation import EncodedPrompt
from promptwire_modal_exllama.params import SamplingParams
from promptwire_modal_exllama.settings import ExllamaSettings

EOS_TOKEN = 2
DEFAULT_REPLY = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


@dataclass(eq=False)
class FakeJob:
    input_ids: list[int]
    params: SamplingParams
    stop_conditions: list[str | int]
    text: str = ""
    new_tokens: int = 0


class FakeGenerator:
    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.pending: list[FakeJob] = []
        self.active: list[FakeJob] = []
        self.enqueued: list[FakeJob] = []
        self.cancelled: list[FakeJob] = []
        self.iterations = 0
        self.max_batch = 0

    def enqueue(self, job: FakeJob) -> int:
        self.pending.append(job)
        self.enqueued.append(job)
        return len(self.enqueued)

    def cancel(self, job: FakeJob) -> None:
        if self.runtime.cancel_raises:
            raise RuntimeError("fake: cancel failed")
        self.cancelled.append(job)
        if job in self.pending:
            self.pending.remove(job)
        if job in self.active:
            self.active.remove(job)

    def num_remaining_jobs(self) -> int:
        return len(self.pending) + len(self.active)

    # What ExLlamaV2's generator calls them, for the engine's metrics: its job lists and its page
    # table (here one page per active job, out of ``runtime.cache_pages``).
    @property
    def active_jobs(self) -> list[FakeJob]:
        return self.active

    @property
    def pending_jobs(self) -> list[FakeJob]:
        return self.pending

    @property
    def referenced_pages(self) -> dict[int, FakeJob]:
        return dict(enumerate(self.active))

    @property
    def unreferenced_pages(self) -> dict[int, None]:
        return dict.fromkeys(range(len(self.active), self.runtime.cache_pages))

    def iterate(self) -> list[dict[str, Any]]:
        runtime = self.runtime
        self.iterations += 1
        if not runtime.gate.wait(timeout=0.01):
            return []  # "the GPU is busy": nothing starts until the test opens the gate
        time.sleep(runtime.step_delay)
        if runtime.fail_iterations > 0:
            runtime.fail_iterations -= 1
            raise RuntimeError("fake: CUDA error: out of memory")
        results: list[dict[str, Any]] = []
        for job in self.pending:
            self.active.append(job)
            results.append({"job": job, "stage": "started", "eos": False})
        self.pending.clear()
        self.max_batch = max(self.max_batch, len(self.active))
        for job in list(self.active):
            results.append(self._advance(job))
        return results

    def _advance(self, job: FakeJob) -> dict[str, Any]:
        reply = self.runtime.reply
        result: dict[str, Any] = {"job": job, "stage": "streaming", "eos": False}
        if job.new_tokens >= len(reply) and EOS_TOKEN in job.stop_conditions:
            job.new_tokens += 1
            return self._end(job, result, "stop_token")
        piece = " " + reply[job.new_tokens % len(reply)]
        job.new_tokens += 1
        for stop in (s for s in job.stop_conditions if isinstance(s, str)):
            at = (job.text + piece).find(stop)
            if at >= 0:
                result["text"] = (job.text + piece)[len(job.text) : at]
                return self._end(job, result, "stop_string")
        job.text += piece
        result["text"] = piece
        if job.new_tokens >= job.params.max_new_tokens:
            return self._end(job, result, "max_new_tokens")
        return result

    def _end(self, job: FakeJob, result: dict[str, Any], reason: str) -> dict[str, Any]:
        self.active.remove(job)
        result.update(
            eos=True,
            eos_reason=reason,
            new_tokens=job.new_tokens,
            prompt_tokens=len(job.input_ids),
        )
        return result


@dataclass
class FakeRuntime:
    """A "loaded model": words are tokens, and the reply is always ``reply``."""

    model_name: str = "fake-model"
    max_seq_len: int = 64
    reply: list[str] = field(default_factory=lambda: list(DEFAULT_REPLY))
    step_delay: float = 0.002
    gate: threading.Event = field(default_factory=threading.Event)
    fail_iterations: int = 0
    cancel_raises: bool = False
    generators: list[FakeGenerator] = field(default_factory=list)
    encoded: list[tuple[str, bool]] = field(default_factory=list)
    """Every ``encode`` call: the prompt, and whether a chat template wrote it."""
    closed: bool = False
    cache_pages: int = 16
    supports_constraints: bool = False
    """No constrained decoding (the CPU tier checks it on the real exllamav2)."""

    def prepare_constraints(self) -> None:
        raise AssertionError("the fake runtime has no constrained decoding")

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def generator(self) -> FakeGenerator:
        return self.generators[-1]

    def encode(self, prompt: str, *, from_template: bool = False) -> EncodedPrompt:
        """BOS (1), then one id per word; a chat template's rendering gets no BOS added."""
        self.encoded.append((prompt, from_template))
        ids = ([] if from_template else [1]) + [10 + i for i, _ in enumerate(prompt.split())]
        return EncodedPrompt(ids, len(ids))

    def new_job(self, prompt: EncodedPrompt, params: SamplingParams) -> FakeJob:
        return FakeJob(list(prompt.tokens), params, params.stop_conditions(frozenset({EOS_TOKEN})))

    def new_generator(self) -> FakeGenerator:
        generator = FakeGenerator(self)
        self.generators.append(generator)
        return generator

    def close(self) -> None:
        self.closed = True


def fake_engine(runtime: FakeRuntime | None = None, **settings: Any) -> BatchingEngine:
    runtime = runtime or FakeRuntime()
    return BatchingEngine(ExllamaSettings(**settings), lambda _: runtime)
