"""The llama.cpp engine: any GGUF model behind the protocol, continuously batched.

``start`` loads the model in a worker thread and starts the scheduler thread; ``prepare``
tokenizes the prompt, checks it against the context, and turns a JSON response format or a
forced tool call into a grammar; ``stream`` hands the job to the scheduler and passes its pieces
on. Conversations are rendered by the chat template in the GGUF file (promptwire's plain
template when it has none). Tool calls are read in the model family's own format where the
template renders tools, and as bare JSON described in the system message otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from dataclasses import dataclass

from promptwire.engine import (
    EngineEvent,
    EngineMetric,
    RequestRejected,
)
from promptwire.engine.constraints import constraint_schema, refuse_tools_with_json
from promptwire.engine.handoff import HandedOff
from promptwire.engine.hf_chat_template import ChatTemplate, ChatTemplateError
from promptwire.engine.tool_calls import (
    JSON_TOOLS,
    ToolFormat,
    describe_tools,
    detect_tool_format,
    read_tool_calls,
    reads_tool_calls,
)
from promptwire.engine.worker import WorkerEngine
from promptwire.protocol import (
    Capabilities,
    ChatMessage,
    PromptRequest,
    ToolSpec,
)
from promptwire.protocol.chat_template import render_plain

from promptwire_llamacpp.grammar import schema_grammar
from promptwire_llamacpp.runtime import LlamaRuntime, SamplerConfig
from promptwire_llamacpp.scheduler import Job, Scheduler
from promptwire_llamacpp.settings import LlamaCppSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRequest:
    """A request tokenized, fitted to the context and given its sampler: what ``stream``
    generates from, computed once before the server answers."""

    request: PromptRequest
    tokens: list[int]
    sampler: SamplerConfig
    max_new_tokens: int
    special: bool

    def job(self, *, handed_off: bool = False) -> Job:
        """The scheduler's job for it: events to an event loop, or handed off."""
        return Job(
            self.tokens, self.sampler, self.max_new_tokens, self.special, handed_off=handed_off
        )


class LlamaCppEngine(WorkerEngine[LlamaRuntime, Scheduler, PreparedRequest]):
    def __init__(
        self,
        settings: LlamaCppSettings,
        load_runtime: Callable[[LlamaCppSettings], LlamaRuntime] = LlamaRuntime,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.model_name = settings.model_name
        self._load_runtime = load_runtime
        self._template: ChatTemplate | None = None
        self._tool_format: ToolFormat = JSON_TOOLS

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model and start the scheduler; a no-op once running."""
        with self._lock:
            if self._worker is not None:
                return
            runtime = self._load_runtime(self.settings)
            try:
                self._template = _chat_template(runtime)
                found = detect_tool_format(self._template.text) if self._template else None
                self._tool_format = found or JSON_TOOLS
                scheduler = Scheduler(
                    runtime,
                    max_waiting=self.settings.max_waiting,
                    shared_prefix_min=self.settings.shared_prefix_min,
                    prompt_lookup=self.settings.prompt_lookup,
                    prompts_in_turn=self.prompts_in_turn,
                )
                scheduler.start()
            except BaseException:
                runtime.close()
                raise
            self._runtime, self._worker = runtime, scheduler
            self.model_name = runtime.model_name
        logger.info(
            "llama.cpp: %s loaded (%d MB), %d sequences of %d tokens, %d threads; chat "
            "template: %s; tool calls: the %s format",
            runtime.path.name,
            runtime.weights_bytes // 1_000_000,
            runtime.parallel,
            runtime.context_size,
            runtime.threads,
            "the model's" if self._template else "promptwire's plain one",
            self._tool_format.name,
        )

    @property
    def scheduler(self) -> Scheduler | None:
        """The running scheduler (for its figures and tests)."""
        return self._worker

    @property
    def prompts_in_turn(self) -> bool:
        """A forward pass finishes at most one request's prompt: on a CPU, where a prompt token
        costs the same in any pass (see ``Scheduler``)."""
        return self.settings.gpu_layers == 0

    @property
    def capabilities(self) -> Capabilities:
        """Tools and structured output, by grammars, once the model is loaded."""
        if self._runtime is None:
            return Capabilities()
        return Capabilities(tools=True, structured_output=True)

    @property
    def tool_format(self) -> ToolFormat:
        return self._tool_format

    def metrics(self) -> Sequence[EngineMetric]:
        scheduler, runtime = self._worker, self._runtime
        if scheduler is None or runtime is None:
            return ()
        stats = scheduler.stats
        return [
            EngineMetric("sequences_active", stats.active, "Requests decoding in the batch."),
            EngineMetric("sequences_waiting", stats.waiting, "Requests waiting for a sequence."),
            EngineMetric(
                "decode_failures",
                scheduler.failures,
                "Forward passes that failed (their requests got a 5xx).",
                kind="counter",
            ),
            EngineMetric(
                "prefix_cache_tokens",
                scheduler.reused_tokens,
                "Prompt tokens found in a sequence's cache, not computed (prefix-cache hits).",
                kind="counter",
            ),
            EngineMetric(
                "prefix_cache_copies",
                scheduler.copied_prefixes,
                "Requests started from a copy of another sequence's cache (a shared prefix).",
                kind="counter",
            ),
            EngineMetric(
                "lookup_guessed_tokens",
                scheduler.guessed_tokens,
                "Tokens guessed by prompt lookup and put in a forward pass.",
                kind="counter",
            ),
            EngineMetric(
                "lookup_accepted_tokens",
                scheduler.accepted_tokens,
                "Guessed tokens the sampler then picked (reply tokens with no pass of their own).",
                kind="counter",
            ),
            EngineMetric("forward_passes", runtime.passes, "Forward passes run.", kind="counter"),
            EngineMetric(
                "forward_passes_one_thread",
                runtime.single_thread_passes,
                "Forward passes run on one thread (thread_wait=auto, or threads=1).",
                kind="counter",
            ),
            EngineMetric("model_weights_bytes", runtime.weights_bytes, "Bytes of the weights."),
        ]

    # -- requests ------------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """``messages`` by the GGUF's chat template (promptwire's plain one if it has none)."""
        self._require_runtime()
        template = self._template
        return render_plain(messages) if template is None else template.render(messages)

    def render_chat_with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> str:
        """The template renders the tools where it can; otherwise they are described in the
        system message and a call is a bare JSON object."""
        self._require_runtime()
        template = self._template
        if self._tool_format is not JSON_TOOLS and template is not None:
            return template.render(messages, tools)
        described = describe_tools(messages, tools)
        return render_plain(described) if template is None else template.render(described)

    def count_prompt_tokens(self, request: PromptRequest) -> int:
        return len(self._tokenize(request))

    def prepare(self, request: PromptRequest) -> PreparedRequest:
        """Tokenize, fit to the context and build the grammar now, so that a prompt too long
        or a schema that cannot be constrained gets its 422 before anything is generated."""
        refuse_tools_with_json(request)
        runtime = self._require_runtime()
        tokens = self._tokenize(request)
        if not tokens:
            raise RequestRejected("the prompt is empty after tokenization")
        room = runtime.context_size - len(tokens)
        if room < 1:
            raise RequestRejected(
                f"the prompt is {len(tokens)} tokens long; this server's context holds "
                f"{runtime.context_size} tokens per request, prompt and completion together"
            )
        if request.max_tokens is not None and request.max_tokens > room:
            raise RequestRejected(
                f"the prompt ({len(tokens)} tokens) plus max_tokens ({request.max_tokens}) is "
                f"more than this server's context of {runtime.context_size} tokens; ask for at "
                f"most {room} tokens or shorten the prompt"
            )
        settings = self.settings
        grammar = self._grammar(request)
        if grammar is not None and (error := runtime.grammar_error(grammar)):
            raise RequestRejected(f"this server cannot constrain a reply to the schema: {error}")
        sampler = SamplerConfig(
            temperature=settings.temperature
            if request.temperature is None
            else request.temperature,
            top_p=settings.top_p if request.top_p is None else request.top_p,
            top_k=settings.top_k if request.top_k is None else request.top_k,
            seed=request.seed,
            repeat_penalty=settings.repeat_penalty,
            repeat_last_n=settings.repeat_last_n,
            grammar=grammar,
        )
        wanted = settings.max_tokens if request.max_tokens is None else request.max_tokens
        special = request.wants_tools() and self._tool_format.decode_special_tokens
        return PreparedRequest(request, tokens, sampler, min(wanted, room), special)

    def _tokenize(self, request: PromptRequest) -> list[int]:
        # The server put render_chat's result in ``prompt`` for a request with ``messages``:
        # the template wrote every BOS the model wants, so none is added.
        from_template = request.messages is not None and self._template is not None
        return self._require_runtime().tokenize(request.prompt, add_special=not from_template)

    def _grammar(self, request: PromptRequest) -> str | None:
        """A JSON response format, or a required tool call, as a grammar."""
        schema = constraint_schema(request, self._tool_format)
        return None if schema is None else schema_grammar(schema)

    def stream(self, prepared: PreparedRequest) -> AsyncGenerator[EngineEvent, None]:
        events = self._run_on_worker(prepared.job())
        return read_tool_calls(events, self._tool_format, prepared.request)  # it may call tools

    def generate_to(
        self, request: PromptRequest, prepared: PreparedRequest, key: Hashable
    ) -> HandedOff | None:
        """Every request but one whose tool calls are read from its text (on an event loop)."""
        if reads_tool_calls(self._tool_format, prepared.request):
            return None
        job = prepared.job(handed_off=True)
        return self._hand_off_job(job, request, key, prompt_tokens=len(prepared.tokens))


def _chat_template(runtime: LlamaRuntime) -> ChatTemplate | None:
    """The GGUF's chat template, or None (promptwire's plain one) when it has none or it does
    not compile as Jinja."""
    text = runtime.chat_template()
    if not text:
        return None
    try:
        return ChatTemplate.from_string(
            text, source="tokenizer.chat_template", special_tokens=runtime.special_tokens()
        )
    except ChatTemplateError as exc:
        logger.warning("the model's chat template does not compile; using the plain one: %s", exc)
        return None
