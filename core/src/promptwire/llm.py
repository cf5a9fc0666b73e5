"""``PromptwireLLM``: a LangChain LLM for any prompt endpoint, with the backend picked by settings.

Unlike LangChain's base ``LLM``, a batch really runs concurrently (bounded by ``max_concurrency``),
and every call shares one pooled HTTP client per object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from promptwire.backends import ClientAdapter
from promptwire.client import ClientConfig, EndpointClient
from promptwire.protocol import PromptResponse, StreamDone, Usage
from promptwire.settings import PromptwireSettings
from promptwire.stops import StopScanner, truncate_at_stop

MODAL_KEY_HEADER = "Modal-Key"
MODAL_SECRET_HEADER = "Modal-Secret"  # noqa: S105 (a header name)

# Fields taken from PromptwireSettings when not given explicitly.
_FROM_SETTINGS = (
    "endpoint_url",
    "backend",
    "api_key",
    "modal_key",
    "modal_secret",
    "timeout",
    "connect_timeout",
    "max_retries",
    "retry_unsafe",
    "max_concurrency",
)


class PromptwireLLM(LLM):
    """An LLM served behind a prompt endpoint (a Modal web endpoint or ``promptwire serve``).

    Arguments beat ``PROMPTWIRE_*`` environment variables (and ``.env``), which beat defaults;
    with nothing set it calls the local server at ``http://127.0.0.1:8000/``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    endpoint_url: str | None = None
    """The endpoint's URL (``PROMPTWIRE_ENDPOINT_URL``)."""
    backend: str | None = None
    """Backend name (``PROMPTWIRE_BACKEND``); its plugin may add parameters and headers."""
    api_key: SecretStr | None = None
    """Bearer token (``PROMPTWIRE_API_KEY``)."""
    modal_key: SecretStr | None = None
    """Modal proxy-auth key, sent as ``Modal-Key`` (``PROMPTWIRE_MODAL_KEY``)."""
    modal_secret: SecretStr | None = None
    """Modal proxy-auth secret, sent as ``Modal-Secret`` (``PROMPTWIRE_MODAL_SECRET``)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Parameters sent with every request (``max_tokens``, ``temperature``, or any extra key)."""
    timeout: float | None = None
    """Seconds for a whole reply, or between two pieces of a stream."""
    connect_timeout: float | None = None
    max_retries: int | None = None
    retry_unsafe: bool | None = None
    """Also retry failures after which the server may have run the request."""
    max_concurrency: int | None = None
    """Prompts of one batch in flight at once."""
    streaming: bool = False
    """Stream every call (callbacks see each token, even through ``invoke``)."""

    _client: EndpointClient | None = PrivateAttr(default=None)
    _adapter: ClientAdapter = PrivateAttr(default_factory=ClientAdapter)
    _backend_settings: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _fill_from_settings(self) -> PromptwireLLM:
        missing = [name for name in _FROM_SETTINGS if getattr(self, name) is None]
        if missing:
            settings = PromptwireSettings()
            for name in missing:
                object.__setattr__(self, name, getattr(settings, name))
        if self.backend:
            from promptwire.plugins import get_backend

            backend = get_backend(self.backend).backend
            self._adapter = backend.client
            self._backend_settings = backend.load_settings()
        return self

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
        }

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {
            "api_key": "PROMPTWIRE_API_KEY",
            "modal_key": "PROMPTWIRE_MODAL_KEY",
            "modal_secret": "PROMPTWIRE_MODAL_SECRET",
        }

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["promptwire", "llms"]

    # -- the endpoint client -------------------------------------------------------------------

    @property
    def client(self) -> EndpointClient:
        """The pooled client; made on first use so an unused LLM opens nothing."""
        if self._client is None:
            secret_headers = {}
            if self.modal_key is not None:
                secret_headers[MODAL_KEY_HEADER] = self.modal_key
            if self.modal_secret is not None:
                secret_headers[MODAL_SECRET_HEADER] = self.modal_secret
            assert self.endpoint_url is not None
            self._client = EndpointClient(
                ClientConfig(
                    url=self.endpoint_url,
                    api_key=self.api_key,
                    secret_headers=secret_headers,
                    headers=self._adapter.headers(self._backend_settings),
                    timeout=float(self.timeout or 600.0),
                    connect_timeout=float(self.connect_timeout or 10.0),
                    max_retries=int(self.max_retries or 0),
                    retry_unsafe=bool(self.retry_unsafe),
                    max_connections=max(100, int(self.max_concurrency or 1)),
                )
            )
        return self._client

    def _payload(
        self, prompt: str, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            **self._adapter.default_params(self._backend_settings),
            **self.model_kwargs,
            **kwargs,
            "prompt": prompt,
        }
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
        scanner = StopScanner(stop)
        for event in self.client.stream(self._payload(prompt, stop, kwargs)):
            if isinstance(event, StreamDone):
                if tail := scanner.flush():
                    yield self._chunk(tail, run_manager)
                info = _generation_info(event.finish_reason, event.usage, event.model)
                yield GenerationChunk(text="", generation_info=info)
                return
            if text := scanner.feed(event.text):
                yield self._chunk(text, run_manager)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        scanner = StopScanner(stop)
        async for event in self.client.astream(self._payload(prompt, stop, kwargs)):
            if isinstance(event, StreamDone):
                if tail := scanner.flush():
                    yield await self._achunk(tail, run_manager)
                info = _generation_info(event.finish_reason, event.usage, event.model)
                yield GenerationChunk(text="", generation_info=info)
                return
            if text := scanner.feed(event.text):
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
        reply = await self.client.acomplete(self._payload(prompt, stop, kwargs))
        return _reply_generation(reply, stop)

    # -- batches, run concurrently -------------------------------------------------------------

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        # LangChain hands one run manager for the whole batch; tokens go to it only for one prompt.
        token_sink = run_manager if len(prompts) == 1 else None
        if len(prompts) == 1:
            generations = [self._generate_one(prompts[0], stop, token_sink, kwargs)]
        else:
            workers = min(int(self.max_concurrency or 1), len(prompts))
            with ThreadPoolExecutor(workers, thread_name_prefix="promptwire") as pool:
                generations = list(
                    pool.map(lambda p: self._generate_one(p, stop, None, kwargs), prompts)
                )
        return self._result(generations)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        token_sink = run_manager if len(prompts) == 1 else None
        limit = asyncio.Semaphore(int(self.max_concurrency or 1))

        async def one(prompt: str) -> Generation:
            async with limit:
                return await self._agenerate_one(prompt, stop, token_sink, kwargs)

        generations = await asyncio.gather(*(one(p) for p in prompts))
        return self._result(list(generations))

    def _result(self, generations: list[Generation]) -> LLMResult:
        usage = Usage()
        model = None
        for generation in generations:
            info = generation.generation_info or {}
            if counted := info.get("usage"):
                usage.prompt_tokens += counted["prompt_tokens"]
                usage.completion_tokens += counted["completion_tokens"]
            model = model or info.get("model")
        token_usage = {**usage.model_dump(), "total_tokens": usage.total_tokens}
        return LLMResult(
            generations=[[g] for g in generations],
            llm_output={"token_usage": token_usage, "model_name": model},
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync connection pool (the object stays usable; a new pool opens on demand)."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


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
    # Servers should apply ``stop`` themselves; cutting here too guards against ones that don't.
    text, stopped = truncate_at_stop(reply.prompt, stop)
    finish = "stop" if stopped else reply.finish_reason
    return Generation(text=text, generation_info=_generation_info(finish, reply.usage, reply.model))


def _merge_chunks(chunks: Iterator[GenerationChunk]) -> Generation:
    merged: GenerationChunk | None = None
    for chunk in chunks:
        merged = chunk if merged is None else merged + chunk
    if merged is None:
        return Generation(text="")
    return Generation(text=merged.text, generation_info=merged.generation_info)
