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
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from promptwire import coldstart
from promptwire.engine import (
    Engine,
    EngineError,
    EngineEvent,
    EngineMetric,
    EngineNotReady,
    Finish,
    RequestUnsupported,
    TextChunk,
)
from promptwire.engine.tool_calls import (
    ToolCallSplitter,
    ToolFormat,
    detect_tool_format,
    forced_tools,
)
from promptwire.protocol import (
    Capabilities,
    ChatMessage,
    FinishReason,
    JsonSchemaFormat,
    PromptRequest,
    ToolSpec,
    Usage,
)
from promptwire.protocol.chat_template import render_plain

from promptwire_modal_exllama.chat_template import ChatTemplate, load_chat_template
from promptwire_modal_exllama.params import SamplingParams, fit_to_context, sampling_params
from promptwire_modal_exllama.settings import ExllamaSettings

logger = logging.getLogger(__name__)

STOP_JOIN_TIMEOUT = 30.0


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


class RequestStream:
    """One request's way back from the generator thread to its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_tokens: int) -> None:
        self.loop = loop
        self.prompt_tokens = prompt_tokens
        self.queue: asyncio.Queue[EngineEvent | EngineError] = asyncio.Queue()
        self.job: Any = None

    def put(self, item: EngineEvent | EngineError) -> None:
        """Called from the generator thread."""
        # RuntimeError: the request's event loop has closed, so nobody is listening.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def _finish_from_result(result: dict[str, Any], stream: RequestStream) -> Finish:
    reason = (
        FinishReason.LENGTH if result.get("eos_reason") == "max_new_tokens" else FinishReason.STOP
    )
    usage = Usage(
        prompt_tokens=int(result.get("prompt_tokens", stream.prompt_tokens)),
        completion_tokens=max(0, int(result.get("new_tokens", 0))),
    )
    return Finish(reason, usage)


class GenerationLoop:
    """The thread that owns the generator and runs every job in flight as one batch."""

    def __init__(
        self, new_generator: Callable[[], DynamicGenerator], *, name: str = "promptwire-generator"
    ) -> None:
        self._new_generator = new_generator
        self._generator = new_generator()
        self._cond = threading.Condition()
        self._inbox: deque[tuple[str, RequestStream]] = deque()
        self._by_job: dict[int, RequestStream] = {}  # only touched by the loop thread
        self._stopping = False
        self._broken: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: Written by the loop thread only; read by anyone (one reference, or one int, each).
        self.stats = generator_stats(self._generator)
        self.failures = 0
        """Forward passes (``iterate()``) that raised, failing the requests in them."""
        self.restarts = 0
        """Generators rebuilt after a failure left one holding jobs."""

    # -- called from any thread ----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Fail what is in flight (503) and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_JOIN_TIMEOUT)

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive() and not self._stopping and self._broken is None

    @property
    def in_flight(self) -> int:
        """Requests whose jobs are in the generator."""
        return len(self._by_job)

    @property
    def generator_jobs(self) -> int:
        """Jobs the generator itself still holds (0 once every cancelled job is freed)."""
        return self._generator.num_remaining_jobs()

    def submit(self, job: Any, stream: RequestStream) -> None:
        """Hand a job to the generator thread; its events arrive on ``stream``."""
        with self._cond:
            if self._broken is not None:
                raise EngineError(f"the engine is out of order ({self._broken}); restart it")
            if self._stopping or not self._thread.is_alive():
                raise EngineNotReady("the engine is not running", retry_after=1)
            stream.job = job
            self._inbox.append(("submit", stream))
            self._cond.notify()

    def cancel(self, stream: RequestStream) -> None:
        """Cancel the stream's job (no-op once it has finished); frees its cache pages."""
        with self._cond:
            self._inbox.append(("cancel", stream))
            self._cond.notify()

    # -- the loop thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                busy = bool(self._by_job) or self._generator.num_remaining_jobs() > 0
                with self._cond:
                    while not self._inbox and not self._stopping and not busy:
                        self._cond.wait()
                    commands = list(self._inbox)
                    self._inbox.clear()
                    stopping = self._stopping
                if stopping:
                    self._shut_down(commands)
                    return
                for command, stream in commands:
                    if command == "submit":
                        self._enqueue(stream)
                    else:
                        self._cancel(stream)
                if self._by_job or self._generator.num_remaining_jobs() > 0:
                    self._step()
                self.stats = generator_stats(self._generator)
        except BaseException as exc:  # never die silently: fail everyone, refuse new work
            logger.exception("the generator thread stopped")
            self.failures += 1
            with self._cond:
                self._broken = type(exc).__name__
                leftover = [stream for command, stream in self._inbox if command == "submit"]
                self._inbox.clear()
            for stream in leftover:
                stream.put(EngineError("the engine stopped unexpectedly"))
            for stream in self._take_all():
                stream.put(EngineError("the engine stopped unexpectedly"))

    def _shut_down(self, commands: list[tuple[str, RequestStream]]) -> None:
        def closing() -> EngineError:
            return EngineNotReady("the server is shutting down", retry_after=1)

        for command, stream in commands:
            if command == "submit":
                stream.put(closing())
        for stream in self._take_all():
            stream.put(closing())
            try:
                self._generator.cancel(stream.job)
            except Exception:
                logger.debug("cancel during shutdown failed", exc_info=True)

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

    def _step(self) -> None:
        try:
            results = self._generator.iterate()
        except Exception as exc:
            name = type(exc).__name__
            self.failures += 1
            logger.error("generation failed: %s", name, exc_info=True)
            failed = self._take_all()
            # Recover before answering, so a client that retries at once finds a working engine.
            self._recover([stream.job for stream in failed])
            for stream in failed:
                stream.put(EngineError(f"generation failed on the server ({name})"))
            return
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


@dataclass(frozen=True)
class PreparedRequest:
    """A request tokenized and fitted to the context (``BatchingEngine.prepare``): what its
    generation job is made from, computed once, before the server answers."""

    request: PromptRequest
    prompt: EncodedPrompt
    params: SamplingParams


class BatchingEngine(Engine[PreparedRequest]):
    """The protocol engine over a ``Runtime``: context checks, then continuous batching.

    ``load_runtime`` does the heavy loading; it runs once, in a worker thread, on ``start``,
    after the model directory's chat template (``chat_template``) has been read.
    """

    def __init__(
        self, settings: ExllamaSettings, load_runtime: Callable[[ExllamaSettings], Runtime]
    ) -> None:
        self.settings = settings
        self.model_name = settings.display_name()
        self._load_runtime = load_runtime
        self._lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._loop: GenerationLoop | None = None
        self._chat_template: ChatTemplate | None = None
        self._tool_format: ToolFormat | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def load_model(self) -> None:
        """Read the chat template and load the model, starting nothing: the part of ``load``
        that a GPU memory snapshot can hold (no thread, no generator). A no-op once loaded."""
        with self._lock:
            if self._runtime is not None:
                return
            chat_template = load_chat_template(self.settings.model_dir)
            runtime = self._load_runtime(self.settings)
            self._runtime, self._chat_template = runtime, chat_template
            self._tool_format = detect_tool_format(chat_template.text) if chat_template else None
            self.model_name = self.settings.model_name or runtime.model_name
        if chat_template is None:
            logger.info("chat template: promptwire's plain template (the model directory has none)")
        else:
            logger.info("chat template: the model's, from %s", chat_template.source)
        if self._tool_format is not None:
            logger.info("tool calls: the %s format", self._tool_format.name)

    def load(self) -> None:
        """Load the model (unless ``load_model`` did) and start the generator thread; a no-op
        once running."""
        self.load_model()
        with self._lock:
            runtime = self._runtime
            if self._loop is not None or runtime is None:
                return
            try:
                with coldstart.phase("generator_start"):
                    loop = GenerationLoop(
                        runtime.new_generator, name="promptwire-exllama-generator"
                    )
                    loop.start()
            except BaseException:
                self._runtime = None
                runtime.close()
                raise
            self._loop = loop

    async def warm_up(self) -> None:
        """Generate one token, so that the first request does not pay for the GPU's first
        kernels (their loading and tuning)."""
        await self.complete(PromptRequest(prompt="Hello", max_tokens=1, temperature=0.0))

    async def stop(self) -> None:
        await asyncio.to_thread(self.unload)

    def unload(self) -> None:
        with self._lock:
            loop, runtime = self._loop, self._runtime
            self._loop = self._runtime = None
        if loop is not None:
            loop.stop()
        if runtime is not None:
            runtime.close()

    @property
    def ready(self) -> bool:
        loop = self._loop
        return loop is not None and loop.healthy

    @property
    def loop(self) -> GenerationLoop | None:
        """The running generation loop (for health details and tests)."""
        return self._loop

    @property
    def chat_template(self) -> ChatTemplate | None:
        """The model's chat template, once loaded; None when it has none (plain template)."""
        return self._chat_template

    @property
    def max_seq_len(self) -> int | None:
        runtime = self._runtime
        return runtime.max_seq_len if runtime is not None else None

    def metrics(self) -> Sequence[EngineMetric]:
        """The generator's jobs and cache pages as the loop thread last counted them, its
        failures and restarts, and the size of the loaded weights."""
        loop, runtime = self._loop, self._runtime
        if loop is None:
            return ()
        stats = loop.stats
        samples = [
            EngineMetric("jobs_active", stats.active_jobs, "Jobs in the generator's batch."),
            EngineMetric("jobs_pending", stats.pending_jobs, "Jobs waiting to join the batch."),
            EngineMetric(
                "generator_failures",
                loop.failures,
                "Forward passes that failed (their requests got a 5xx).",
                kind="counter",
            ),
            EngineMetric(
                "generator_restarts",
                loop.restarts,
                "Generators rebuilt after a failure.",
                kind="counter",
            ),
        ]
        if stats.cache_pages_used is not None and stats.cache_pages_free is not None:
            samples += [
                EngineMetric(
                    "cache_pages_used", stats.cache_pages_used, "Cache pages jobs refer to."
                ),
                EngineMetric(
                    "cache_pages_free",
                    stats.cache_pages_free,
                    "Cache pages free for new jobs (some still hold reusable prefixes).",
                ),
            ]
        weights = getattr(runtime, "weights_bytes", None)
        if isinstance(weights, int):
            samples.append(
                EngineMetric("model_weights_bytes", weights, "Bytes of the loaded weight files.")
            )
        return samples

    @property
    def capabilities(self) -> Capabilities:
        """Structured output where lm-format-enforcer is installed (constrained decoding); tools
        where the model's chat template renders them in a format this engine reads
        (``tool_calls``). Nothing before the model is loaded."""
        runtime = self._runtime
        if runtime is None:
            return Capabilities()
        constraints = runtime.supports_constraints
        return Capabilities(tools=self._tool_format is not None, structured_output=constraints)

    # -- requests ------------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """``messages`` by the model's chat template (promptwire's plain one if it has none)."""
        self._require_runtime()
        template = self._chat_template
        return render_plain(messages) if template is None else template.render(messages)

    def render_chat_with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> str:
        """``messages`` and ``tools`` by the model's chat template (only called when it has a
        tool-call format, so a template)."""
        self._require_runtime()
        template = self._chat_template
        assert template is not None
        return template.render(messages, tools)

    def prepare(self, request: PromptRequest) -> PreparedRequest:
        """Tokenize and check the context length now, so an oversized prompt gets its 422
        before any generation starts; ``stream`` generates from the result."""
        if request.wants_tools() and request.wants_json():
            raise RequestUnsupported(
                "this engine answers either tool calls or a JSON response_format, not both in "
                "one request: send tool_choice 'none' with the response_format, or no "
                "response_format with the tools"
            )
        if forced_tools(request) and not self.capabilities.structured_output:
            raise RequestUnsupported(
                "a required tool call needs constrained decoding (lm-format-enforcer), which "
                "this server does not have: use tool_choice 'auto'"
            )
        runtime = self._require_runtime()
        params = sampling_params(request, self.settings)
        # The server put render_chat's result in ``prompt`` for a request with ``messages``.
        from_template = request.messages is not None and self._chat_template is not None
        prompt = runtime.encode(request.prompt, from_template=from_template)
        params = self._constrain(request, params)
        fitted = fit_to_context(params, prompt.length, runtime.max_seq_len)
        return PreparedRequest(request, prompt, fitted)

    def _constrain(self, request: PromptRequest, params: SamplingParams) -> SamplingParams:
        """A JSON response format, or a required tool call, as constrained decoding."""
        fmt = self._tool_format
        if request.wants_tools() and fmt is not None:
            params = replace(params, decode_special_tokens=fmt.decode_special_tokens)
            if forced := forced_tools(request):
                return replace(params, constrained=True, json_schema=fmt.call_schema(forced))
            return params
        if isinstance(request.response_format, JsonSchemaFormat):
            schema = request.response_format.json_schema.json_schema
            return replace(params, constrained=True, json_schema=schema)
        if request.wants_json():  # json_object: any JSON object (not any JSON value)
            return replace(params, constrained=True, json_schema={"type": "object"})
        return params

    def _require_runtime(self) -> Runtime:
        if self._runtime is None or not self.ready:
            raise EngineNotReady("the model is not loaded", retry_after=1)
        return self._runtime

    async def stream(self, prepared: PreparedRequest) -> AsyncGenerator[EngineEvent, None]:
        request, fmt = prepared.request, self._tool_format
        if not (request.wants_tools() and request.tools and fmt is not None):
            async for event in self._generate(prepared):
                yield event
            return
        # The model may call tools: text that could begin a call is held back, and the calls
        # are read from it at the end (a required call: the whole reply is one).
        tools = request.tools
        splitter = ToolCallSplitter(fmt, hold_all=forced_tools(request) is not None)
        async for event in self._generate(prepared):
            if isinstance(event, TextChunk):
                if text := splitter.feed(event.text):
                    yield TextChunk(text)
                continue
            assert isinstance(event, Finish)
            text, calls = splitter.finish(tools)
            if text:
                yield TextChunk(text)
            for call in calls:
                yield call
            reason = FinishReason.TOOL_CALLS if calls else event.finish_reason
            yield Finish(reason, event.usage)

    async def _generate(self, prepared: PreparedRequest) -> AsyncGenerator[EngineEvent, None]:
        runtime, loop = self._require_runtime(), self._loop
        if loop is None:
            raise EngineNotReady("the model is not loaded", retry_after=1)
        if prepared.params.constrained:
            await asyncio.to_thread(runtime.prepare_constraints)  # once; seconds on a big vocab
        job = runtime.new_job(prepared.prompt, prepared.params)
        stream = RequestStream(asyncio.get_running_loop(), prepared.prompt.length)
        loop.submit(job, stream)
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, EngineError):
                    finished = True
                    raise item
                finished = isinstance(item, Finish)
                yield item
                if finished:
                    return
        finally:
            if not finished:  # closed early: the client left, or the caller stopped reading
                loop.cancel(stream)
