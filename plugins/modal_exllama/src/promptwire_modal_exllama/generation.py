"""Continuous batching: one thread drives the dynamic generator, requests stream back to asyncio.

The generator (ExLlamaV2's ``ExLlamaV2DynamicGenerator``, or anything with its interface) is
not thread-safe and its ``iterate()`` blocks on the GPU, so exactly one thread owns it. Every
request in flight is a job in the same generator: each ``iterate()`` advances all of them at
once, and a new request joins the running batch at the next step. Pieces of text go back to the
request's event loop through ``loop.call_soon_threadsafe`` into the request's own queue, so the
event loop never waits for the GPU. Closing a request's stream cancels its job, which frees its
cache pages. A failing ``iterate()`` fails the requests in flight (5xx) and the loop carries on
with the next ones.

Nothing here imports exllamav2 or torch: the model library sits behind ``Runtime``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from promptwire.engine import (
    EngineError,
    Finish,
    TextChunk,
)
from promptwire.engine.worker import BatchWorker, EventChannel
from promptwire.protocol import (
    FinishReason,
    Usage,
)

from promptwire_modal_exllama.params import SamplingParams

logger = logging.getLogger(__name__)


class DynamicGenerator(Protocol):
    """The part of ``ExLlamaV2DynamicGenerator`` the loop uses.

    ``iterate()`` returns result dicts: ``job``, ``stage`` (``"streaming"`` once tokens flow),
    ``text``, ``eos`` and, with ``eos``, ``eos_reason``, ``new_tokens`` and ``prompt_tokens``.
    """

    def enqueue(self, job: Any) -> Any: ...

    def iterate(self) -> list[dict[str, Any]]: ...

    def cancel(self, job: Any) -> Any: ...

    def num_remaining_jobs(self) -> int: ...


@dataclass(frozen=True)
class EncodedPrompt:
    tokens: Any
    """The model library's form of the prompt's token ids (a tensor for ExLlamaV2)."""
    length: int


class Runtime(Protocol):
    """A loaded model: what the engine needs from the model library."""

    model_name: str
    max_seq_len: int
    """Longest prompt plus completion of one request."""
    supports_constraints: bool
    """Jobs may be constrained to JSON (``SamplingParams.constrained``)."""

    def prepare_constraints(self) -> None:
        """Build what constrained jobs need, once; slow: called in a worker thread."""
        ...

    def encode(self, prompt: str, *, from_template: bool = False) -> EncodedPrompt:
        """The prompt's tokens. ``from_template``: the model's chat template wrote it, so it
        already holds every BOS the model wants and its special tokens are read as such."""
        ...

    def new_job(self, prompt: EncodedPrompt, params: SamplingParams) -> Any: ...

    def new_generator(self) -> DynamicGenerator: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class GeneratorStats:
    """What the generator holds, as the loop thread last saw it (read by ``/metrics``)."""

    active_jobs: int = 0
    pending_jobs: int = 0
    cache_pages_used: int | None = None
    """Cache pages some job refers to; None for a generator that does not say."""
    cache_pages_free: int | None = None
    """Pages no job refers to (a page may still hold a prefix a later request can reuse)."""


def generator_stats(generator: Any) -> GeneratorStats:
    """Counted in the loop thread, the only one that changes the generator: ExLlamaV2's dynamic
    generator keeps its jobs in ``active_jobs``/``pending_jobs`` and its page table in
    ``referenced_pages``/``unreferenced_pages``."""

    def count(name: str) -> int | None:
        items = getattr(generator, name, None)
        return len(items) if isinstance(items, list | dict) else None

    return GeneratorStats(
        active_jobs=count("active_jobs") or 0,
        pending_jobs=count("pending_jobs") or 0,
        cache_pages_used=count("referenced_pages"),
        cache_pages_free=count("unreferenced_pages"),
    )


class RequestStream(EventChannel):
    """One request's way back from the generator thread to its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_tokens: int, job: Any) -> None:
        super().__init__(loop)
        self.prompt_tokens = prompt_tokens
        self.job = job
        """The model library's job (an ``ExLlamaV2DynamicJob``)."""


def _finish_from_result(result: dict[str, Any], stream: RequestStream) -> Finish:
    reason = (
        FinishReason.LENGTH if result.get("eos_reason") == "max_new_tokens" else FinishReason.STOP
    )
    usage = Usage(
        prompt_tokens=int(result.get("prompt_tokens", stream.prompt_tokens)),
        completion_tokens=max(0, int(result.get("new_tokens", 0))),
    )
    said = result.get("eos_triggering_string")  # the request's stop string that ended it
    stopped_by = (
        said if result.get("eos_reason") == "stop_string" and isinstance(said, str) else None
    )
    return Finish(reason, usage, stopped_by)


class GenerationLoop(BatchWorker[RequestStream]):
    """The thread that owns the generator and runs every job in flight as one batch."""

    def __init__(
        self, new_generator: Callable[[], DynamicGenerator], *, name: str = "promptwire-generator"
    ) -> None:
        super().__init__(name=name)
        self._new_generator = new_generator
        self._generator = new_generator()
        self._by_job: dict[int, RequestStream] = {}  # only touched by the loop thread
        #: Written by the loop thread only; read by anyone (one reference, or one int, each).
        self.stats = generator_stats(self._generator)
        self.restarts = 0
        """Generators rebuilt after a failure left one holding jobs."""

    # -- called from any thread ----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests whose jobs are in the generator."""
        return len(self._by_job)

    @property
    def generator_jobs(self) -> int:
        """Jobs the generator itself still holds (0 once every cancelled job is freed)."""
        return self._generator.num_remaining_jobs()

    # -- the loop thread -----------------------------------------------------------------------

    def _busy(self) -> bool:
        return bool(self._by_job) or self._generator.num_remaining_jobs() > 0

    def _accept(self, stream: RequestStream) -> None:
        self._enqueue(stream)

    def _step(self) -> None:
        if self._busy():
            self._iterate()
        self.stats = generator_stats(self._generator)

    def _release_all(self) -> list[RequestStream]:
        streams = self._take_all()
        for stream in streams:
            try:
                self._generator.cancel(stream.job)
            except Exception:
                logger.debug("cancel during shutdown failed", exc_info=True)
        return streams

    def _enqueue(self, stream: RequestStream) -> None:
        try:
            self._generator.enqueue(stream.job)
        except Exception as exc:
            logger.error("the generator refused a job: %s", type(exc).__name__, exc_info=True)
            stream.put(EngineError(f"the generator refused the request ({type(exc).__name__})"))
            return
        self._by_job[id(stream.job)] = stream

    def _cancel(self, stream: RequestStream) -> None:
        if self._by_job.pop(id(stream.job), None) is None:
            return  # finished (or failed) before the cancel arrived
        try:
            self._generator.cancel(stream.job)
        except Exception:
            logger.exception("cancelling a job failed")
            self._recover([])

    def _iterate(self) -> None:
        try:
            results = self._generator.iterate()
        except Exception as exc:
            name = type(exc).__name__
            logger.error("generation failed: %s", name, exc_info=True)
            failed = self._take_all()
            # Recover before answering, so a client that retries at once finds a working engine.
            self._recover([stream.job for stream in failed])
            for stream in failed:
                stream.put(EngineError(f"generation failed on the server ({name})"))
            self._pass_failed(name)  # several in a row: the GPU is in no state to go on
            return
        self._pass_succeeded()
        for result in results:
            self._dispatch(result)

    def _dispatch(self, result: dict[str, Any]) -> None:
        stream = self._by_job.get(id(result.get("job")))
        if stream is None or result.get("stage") != "streaming":
            return
        text = result.get("text")
        if text:
            stream.put(TextChunk(text))
        if result.get("eos") and result.get("eos_reason") == "stop_token":
            # Text held back because it might have begun a stop string is real output when
            # an end-of-sequence token comes next; ExLlamaV2 reports it under "held".
            held = result.get("held")
            if isinstance(held, dict) and held.get("text"):
                stream.put(TextChunk(str(held["text"])))
        if result.get("eos"):
            del self._by_job[id(stream.job)]
            stream.put(_finish_from_result(result, stream))

    def _take_all(self) -> list[RequestStream]:
        """Every request in flight, forgotten by the loop (the caller tells them why)."""
        streams = list(self._by_job.values())
        self._by_job.clear()
        return streams

    def _recover(self, failed_jobs: list[Any]) -> None:
        """Free the failed jobs; if the generator will not let go of them, build a new one."""
        try:
            for job in failed_jobs:
                self._generator.cancel(job)
            if self._generator.num_remaining_jobs() == 0:
                return
        except Exception:
            logger.warning("could not free the failed jobs; rebuilding the generator")
        try:
            self._generator = self._new_generator()
            self.restarts += 1
        except Exception as exc:
            logger.exception("could not rebuild the generator")
            with self._cond:
                self._broken = type(exc).__name__
