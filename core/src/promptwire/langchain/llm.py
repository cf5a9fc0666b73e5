"""``PromptwireLLM``: a LangChain LLM for any prompt endpoint, with the backend picked by settings.

Unlike LangChain's base ``LLM``, a batch really runs concurrently (bounded by ``max_concurrency``)
and gives each prompt its own answer or error (``promptwire.langchain._batches``),
and every call shares one pooled HTTP client per object. The endpoint fields, their resolution from
settings and the client are shared with ``ChatPromptwire`` (``_endpoint_model`` beside this module).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import aclosing
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict

from promptwire.client.wire import ReasoningDelta
from promptwire.langchain._batches import abatch_each, batch_each
from promptwire.langchain._endpoint_model import EndpointModel, arun_concurrently, run_concurrently
from promptwire.langchain._stop_guard import StopGuard
from promptwire.protocol import PromptResponse, StreamDone, StreamToolCall, Usage
from promptwire.router._served import served_by


class PromptwireLLM(EndpointModel, LLM):
    """An LLM served behind a prompt endpoint (a Modal web endpoint or ``promptwire serve``).

    Arguments beat ``PROMPTWIRE_*`` environment variables (and ``.env``), which beat defaults;
    with nothing set it calls the local server at ``http://127.0.0.1:8000/``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    # The endpoint and generation fields come from EndpointModel.
    streaming: bool = False
    """Stream every call (callbacks see each token, even through ``invoke``)."""

    # -- LangChain metadata --------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "promptwire"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "backend": self.backend,
            "model_kwargs": self.model_kwargs,
            **self._generation_params(),
        }

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._tracing_params("llm", stop, kwargs)

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """Where LangChain's ``load`` finds the class: the package itself, whose names stay put
        wherever the module that defines them moves."""
        return ["promptwire"]

    # -- requests ------------------------------------------------------------------------------

    def _payload(
        self, prompt: str, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {**self._base_params(), **kwargs, "prompt": prompt}
        if stop:
            payload["stop"] = list(stop)
        return payload

    # -- single calls --------------------------------------------------------------------------

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self._generate_one(prompt, stop, run_manager, kwargs).text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return (await self._agenerate_one(prompt, stop, run_manager, kwargs)).text

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        stop = self._stops(stop)
        guard = StopGuard(stop)
        for event in self.client.stream(self._payload(prompt, stop, kwargs)):
            if isinstance(event, (ReasoningDelta, StreamToolCall)):
                continue  # a completion's text is the answer alone
            if isinstance(event, StreamDone):
                tail, finish = guard.finish(event.finish_reason)
                if tail:
                    yield self._chunk(tail, run_manager)
                info = _generation_info(finish, event.usage, event.model) | served_by(event)
                yield GenerationChunk(text="", generation_info=info)
                return
            if text := guard.feed(event.text):
                yield self._chunk(text, run_manager)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        stop = self._stops(stop)
        guard = StopGuard(stop)
        events = self.client.astream(self._payload(prompt, stop, kwargs))
        async with aclosing(events):  # frees the connection as soon as the stream ends
            async for event in events:
                if isinstance(event, (ReasoningDelta, StreamToolCall)):
                    continue
                if isinstance(event, StreamDone):
                    tail, finish = guard.finish(event.finish_reason)
                    if tail:
                        yield await self._achunk(tail, run_manager)
                    info = _generation_info(finish, event.usage, event.model) | served_by(event)
                    yield GenerationChunk(text="", generation_info=info)
                    return
                if text := guard.feed(event.text):
                    yield await self._achunk(text, run_manager)

    @staticmethod
    def _chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> GenerationChunk:
        chunk = GenerationChunk(text=text)
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    @staticmethod
    async def _achunk(
        text: str, run_manager: AsyncCallbackManagerForLLMRun | None
    ) -> GenerationChunk:
        chunk = GenerationChunk(text=text)
        if run_manager:
            await run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _generate_one(
        self,
        prompt: str,
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> Generation:
        if self.streaming:
            return _merge_chunks(self._stream(prompt, stop, run_manager, **kwargs))
        stop = self._stops(stop)
        reply = self.client.complete(self._payload(prompt, stop, kwargs))
        return _reply_generation(reply, stop)

    async def _agenerate_one(
        self,
        prompt: str,
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> Generation:
        if self.streaming:
            chunks = [c async for c in self._astream(prompt, stop, run_manager, **kwargs)]
            return _merge_chunks(iter(chunks))
        stop = self._stops(stop)
        reply = await self.client.acomplete(self._payload(prompt, stop, kwargs))
        return _reply_generation(reply, stop)

    # -- batches, run concurrently -------------------------------------------------------------

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Run the prompts concurrently: at most the config's ``max_concurrency`` (else the
        model's) in flight, new ones starting as others finish; with ``return_exceptions``, each
        failed prompt comes back as its own error, the others as their answers. (LangChain's
        base class cuts the batch into waves of ``max_concurrency``, and returns one failure
        for every prompt of the batch.)"""
        limit = int(self.max_concurrency or 1)
        return batch_each(
            self, inputs, config, limit, return_exceptions=return_exceptions, **kwargs
        )

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        limit = int(self.max_concurrency or 1)
        return await abatch_each(
            self, inputs, config, limit, return_exceptions=return_exceptions, **kwargs
        )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        # LangChain hands one run manager for the whole batch; tokens go to it only for one prompt.
        token_sink = run_manager if len(prompts) == 1 else None
        generations = run_concurrently(
            lambda p: self._generate_one(p, stop, token_sink, kwargs),
            prompts,
            int(self.max_concurrency or 1),
        )
        return self._result(generations)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if len(prompts) == 1:  # ainvoke: no task or semaphore needed
            return self._result([await self._agenerate_one(prompts[0], stop, run_manager, kwargs)])
        generations = await arun_concurrently(
            lambda p: self._agenerate_one(p, stop, None, kwargs),
            prompts,
            int(self.max_concurrency or 1),
        )
        return self._result(generations)

    def _result(self, generations: list[Generation]) -> LLMResult:
        usage = Usage()
        model = None
        counted_any = False
        for generation in generations:
            info = generation.generation_info or {}
            if counted := info.get("usage"):
                usage.prompt_tokens += counted["prompt_tokens"]
                usage.completion_tokens += counted["completion_tokens"]
                counted_any = True
            model = model or info.get("model")
        # No reply counted (a server that sends no usage): none, not zero tokens.
        token_usage = (
            {**usage.model_dump(), "total_tokens": usage.total_tokens} if counted_any else {}
        )
        return LLMResult(
            generations=[[g] for g in generations],
            llm_output={"token_usage": token_usage, "model_name": model},
        )


def _generation_info(finish_reason: Any, usage: Usage | None, model: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if finish_reason is not None:
        info["finish_reason"] = str(finish_reason)
    if usage is not None:
        info["usage"] = {**usage.model_dump(), "total_tokens": usage.total_tokens}
    if model is not None:
        info["model"] = model
    return info


def _reply_generation(reply: PromptResponse, stop: list[str] | None) -> Generation:
    text, finish = StopGuard(stop).whole(reply.prompt, reply.finish_reason)
    info = _generation_info(finish, reply.usage, reply.model) | served_by(reply)
    return Generation(text=text, generation_info=info)


def _merge_chunks(chunks: Iterator[GenerationChunk]) -> Generation:
    merged: GenerationChunk | None = None
    for chunk in chunks:
        merged = chunk if merged is None else merged + chunk
    if merged is None:
        return Generation(text="")
    return Generation(text=merged.text, generation_info=merged.generation_info)


__all__ = [
    "PromptwireLLM",
]
