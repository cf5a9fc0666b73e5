"""The ExLlamaV2 backend's ``Engine``: requests checked against the context, tokenized, fitted
and sampled as the model's settings say, then run as jobs of the continuous-batching loop
(``generation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace

from promptwire.engine import (
    EngineEvent,
    EngineMetric,
    RequestUnsupported,
)
from promptwire.engine.constraints import constraint_schema, refuse_tools_with_json
from promptwire.engine.tool_calls import (
    ToolFormat,
    detect_tool_format,
    forced_tools,
    read_tool_calls,
)
from promptwire.engine.worker import WorkerEngine
from promptwire.modal import coldstart
from promptwire.protocol import (
    Capabilities,
    ChatMessage,
    PromptRequest,
    ToolSpec,
)
from promptwire.protocol.chat_template import render_plain

from promptwire_modal_exllama.chat_template import ChatTemplate, load_chat_template
from promptwire_modal_exllama.generation import (
    EncodedPrompt,
    GenerationLoop,
    RequestStream,
    Runtime,
)
from promptwire_modal_exllama.params import SamplingParams, fit_to_context, sampling_params
from promptwire_modal_exllama.settings import ExllamaSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRequest:
    """A request tokenized and fitted to the context (``BatchingEngine.prepare``): what its
    generation job is made from, computed once, before the server answers."""

    request: PromptRequest
    prompt: EncodedPrompt
    params: SamplingParams


class BatchingEngine(WorkerEngine[Runtime, GenerationLoop, PreparedRequest]):
    """The protocol engine over a ``Runtime``: context checks, then continuous batching.

    ``load_runtime`` does the heavy loading; it runs once, in a worker thread, on ``start``,
    after the model directory's chat template (``chat_template``) has been read.
    """

    def __init__(
        self, settings: ExllamaSettings, load_runtime: Callable[[ExllamaSettings], Runtime]
    ) -> None:
        super().__init__()
        self.settings = settings
        self.model_name = settings.display_name()
        self._load_runtime = load_runtime
        self._chat_template: ChatTemplate | None = None
        self._tool_format: ToolFormat | None = None

    # -- lifecycle -----------------------------------------------------------------------------

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
            if self._worker is not None or runtime is None:
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
            self._worker = loop

    async def warm_up(self) -> None:
        """Generate one token, so that the first request does not pay for the GPU's first
        kernels (their loading and tuning)."""
        await self.complete(PromptRequest(prompt="Hello", max_tokens=1, temperature=0.0))

    @property
    def loop(self) -> GenerationLoop | None:
        """The running generation loop (for health details and tests)."""
        return self._worker

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
        loop, runtime = self._worker, self._runtime
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
        refuse_tools_with_json(request)
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
        if (schema := constraint_schema(request, fmt)) is not None:
            return replace(params, constrained=True, json_schema=schema)
        return params

    def stream(self, prepared: PreparedRequest) -> AsyncGenerator[EngineEvent, None]:
        events = self._generate(prepared)
        return read_tool_calls(events, self._tool_format, prepared.request)  # it may call tools

    async def _generate(self, prepared: PreparedRequest) -> AsyncGenerator[EngineEvent, None]:
        runtime = self._require_runtime()
        if prepared.params.constrained:
            await asyncio.to_thread(runtime.prepare_constraints)  # once; seconds on a big vocab
        job = runtime.new_job(prepared.prompt, prepared.params)
        stream = RequestStream(asyncio.get_running_loop(), prepared.prompt.length, job)
        async with contextlib.aclosing(self._run_on_worker(stream)) as events:
            async for event in events:
                yield event
