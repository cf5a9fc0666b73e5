"""``WordEngine``: a ``WorkerEngine`` whose worker thread writes one word of the prompt per
forward pass for every request in flight, so that the core's worker machinery (the courier, the
hand-off, cancelling, stopping) runs as a real backend's does, without a model.

Each pass emits every active request's next word, then a ``Finish`` once a request's words are
out (its usage exact). A prompt's words may be followed by ``@<seconds>``: the pause of each pass
(a slow model, for tests that act while a reply is under way); the word ``!fail`` makes its pass
raise (a backend's bug: the worker fails every request and refuses more), the word ``!flaky``
makes it fail as a backend's failed forward pass does (the pass's requests get an error and the
worker goes on, unless passes keep failing). It counts passes and
what it cancelled and the requests handed off, in its metrics and as attributes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Hashable, Sequence
from dataclasses import dataclass, field

from promptwire.engine import EngineError, EngineEvent, EngineMetric, Finish, TextChunk
from promptwire.engine.handoff import HandedOff
from promptwire.engine.worker import BatchWorker, EventChannel, WorkerEngine
from promptwire.protocol import FinishReason, PromptRequest, Usage
from pydantic import BaseModel


class WordSettings(BaseModel):
    pass_seconds: float = 0.0
    """Each forward pass's pause (a prompt's ``@<seconds>`` overrides it)."""


@dataclass(eq=False)
class WordJob(EventChannel):
    words: list[str]
    pause: float
    handed_off: bool = False
    written: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.handed_off:
            EventChannel.__init__(self)


class WordWorker(BatchWorker[WordJob]):
    def __init__(self) -> None:
        super().__init__(name="word-worker")
        self.active: list[WordJob] = []
        self.passes = 0
        self.cancelled = 0

    def _busy(self) -> bool:
        return bool(self.active)

    def _accept(self, request: WordJob) -> None:
        self.active.append(request)

    def _cancel(self, request: WordJob) -> None:
        if request in self.active:
            self.active.remove(request)
            self.cancelled += 1

    def _step(self) -> None:
        if not self.active:
            return
        time.sleep(max(job.pause for job in self.active))
        self.passes += 1
        if any(job.words[job.written] == "!flaky" for job in self.active):
            for job in self._take_all():
                job.put(EngineError("generation failed on the server (RuntimeError)"))
            self._pass_failed("RuntimeError")
            return
        self._pass_succeeded()
        for job in list(self.active):
            word = job.words[job.written]
            if word == "!fail":
                raise RuntimeError("the pass failed")
            job.written += 1
            job.put(TextChunk(word if job.written == 1 else " " + word))
            if job.written == len(job.words):
                self.active.remove(job)
                usage = Usage(prompt_tokens=len(job.words), completion_tokens=job.written)
                job.put(Finish(FinishReason.STOP, usage))

    def _take_all(self) -> list[WordJob]:
        taken, self.active = self.active, []
        return taken


class _Runtime:
    def close(self) -> None:
        pass


class WordEngine(WorkerEngine[_Runtime, WordWorker, PromptRequest]):
    model_name = "words"

    def __init__(self, settings: WordSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or WordSettings()
        self.handed_off = 0

    def load(self) -> None:
        with self._lock:
            if self._worker is None:
                worker = WordWorker()
                worker.start()
                self._runtime, self._worker = _Runtime(), worker

    @property
    def worker(self) -> WordWorker | None:
        return self._worker

    def prepare(self, request: PromptRequest) -> PromptRequest:
        return request

    def metrics(self) -> Sequence[EngineMetric]:
        worker = self._worker
        if worker is None:
            return ()
        return [
            EngineMetric("active", len(worker.active), "Requests in the batch."),
            EngineMetric("cancelled", worker.cancelled, "Requests cancelled.", kind="counter"),
            EngineMetric("passes", worker.passes, "Forward passes.", kind="counter"),
            EngineMetric("handed_off", self.handed_off, "Requests handed off.", kind="counter"),
        ]

    def _job(self, request: PromptRequest, *, handed_off: bool) -> WordJob:
        words = request.prompt.split()
        pause = self.settings.pass_seconds
        if words and words[-1].startswith("@"):
            pause = float(words.pop()[1:])
        return WordJob(words or ["..."], pause, handed_off=handed_off)

    def stream(self, prepared: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        return self._run_on_worker(self._job(prepared, handed_off=False))

    def generate_to(
        self, request: PromptRequest, prepared: PromptRequest, key: Hashable
    ) -> HandedOff | None:
        job = self._job(prepared, handed_off=True)
        self.handed_off += 1
        return self._hand_off_job(job, request, key, prompt_tokens=len(job.words))


def create_word_engine(settings: WordSettings) -> WordEngine:
    return WordEngine(settings)
