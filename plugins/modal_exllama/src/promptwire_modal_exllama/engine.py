"""The ExLlamaV2 engine: a model directory loaded once, served by the dynamic generator.

This is the only module that imports ``exllamav2`` and ``torch``, and only when a model is
loaded, so the client, the CLI and CPU tests never pay for them. Batching, streaming and
cancellation live in ``batching``; this module only says how to load the model, count tokens and
build a job.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

from promptwire.engine import EngineError
from promptwire.errors import ConfigurationError

from promptwire_modal_exllama.batching import (
    BatchingEngine,
    DynamicGenerator,
    EncodedPrompt,
)
from promptwire_modal_exllama.params import SamplingParams
from promptwire_modal_exllama.settings import (
    MAX_INPUT_LEN,
    MAX_Q_SIZE,
    PAGE_SIZE,
    CacheMode,
    ExllamaSettings,
)

logger = logging.getLogger(__name__)

#: Tokens ingested per forward pass of a prefill (ExLlamaV2's default ``max_input_len``).
MAX_CHUNK_SIZE = MAX_INPUT_LEN

INSTALL_HINT = (
    "install the GPU extra (pip install 'promptwire-modal-exllama[gpu]') with a CUDA build of "
    "torch and flash-attn; see the plugin README for the exact wheels"
)


class ModelLoadError(EngineError):
    """The model could not be loaded (missing files, no GPU, missing libraries)."""


def _import_gpu_libraries() -> Any:
    """torch (checked for a GPU) and exllamav2, or a clear error saying what is missing."""
    try:
        import torch
    except ImportError as exc:
        raise ModelLoadError(f"torch is not installed ({exc}); {INSTALL_HINT}") from exc
    if not torch.cuda.is_available():
        raise ModelLoadError("no CUDA GPU is available; ExLlamaV2 needs one")
    try:
        import exllamav2
        import exllamav2.generator
    except ImportError as exc:
        raise ModelLoadError(f"exllamav2 is not installed ({exc}); {INSTALL_HINT}") from exc
    return exllamav2


def raise_batch_rows(config: Any, max_batch_size: int) -> bool:
    """Make the model's scratch buffers (``max_input_len * max_batch_size`` tokens per forward
    pass) hold the generator's ``max_batch_size * MAX_Q_SIZE``, before loading. ``load_autosplit``
    caps ``max_input_len`` at ``max_seq_len``, so a short context needs more rows. True when
    raised."""
    input_len = min(int(config.max_input_len), int(config.max_seq_len))
    needed = MAX_Q_SIZE * max_batch_size
    if needed <= int(config.max_batch_size) * input_len:
        return False
    config.max_batch_size = math.ceil(needed / input_len)
    return True


def _eos_token_ids(model_dir: Path, config: Any, tokenizer: Any) -> frozenset[int]:
    """Every end-of-sequence token the model declares. ExLlamaV2 keeps only the first of
    config.json's list, but Llama 3 instruct models end turns with another one."""
    ids: set[int] = set()
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    generation_config = getattr(config, "generation_config", None) or {}
    declared: list[Any] = list(generation_config.get("eos_token_id") or [])
    try:
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        value = raw.get("eos_token_id")
        declared += value if isinstance(value, list) else [value]
    except (OSError, ValueError):
        pass
    ids.update(token for token in declared if isinstance(token, int) and token >= 0)
    return frozenset(ids)


class ExllamaRuntime:
    """A model, its cache and tokenizer on the GPU, and the recipe for dynamic generators."""

    def __init__(self, settings: ExllamaSettings) -> None:
        self.settings = settings
        model_dir = settings.model_dir
        if model_dir is None:
            raise ModelLoadError(
                "no model directory: set PROMPTWIRE_MODAL_EXLLAMA__MODEL_DIR or pass --model-dir"
            )
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(f"{model_dir} is not a model directory (no config.json)")
        self.model_dir = model_dir
        self.model_name = settings.model_name or model_dir.name

        exl = _import_gpu_libraries()

        config = exl.ExLlamaV2Config(str(model_dir))
        config.arch_compat_overrides()
        requested = settings.max_seq_len or config.max_seq_len
        self.max_seq_len = int(min(requested, settings.cache_size))
        config.max_seq_len = self.max_seq_len
        if settings.max_batch_size is not None and raise_batch_rows(
            config, settings.max_batch_size
        ):
            logger.info(
                "max_batch_size %d: the model's forward pass holds %d x %d tokens",
                settings.max_batch_size,
                config.max_batch_size,
                min(config.max_input_len, config.max_seq_len),
            )

        self.model = exl.ExLlamaV2(config)
        self.cache = self._cache_class(exl)(self.model, max_seq_len=settings.cache_size, lazy=True)
        self.model.load_autosplit(self.cache, progress=False)
        self.tokenizer = exl.ExLlamaV2Tokenizer(config)
        self.config = config
        self.eos_token_ids = _eos_token_ids(model_dir, config, self.tokenizer)
        bos = self.tokenizer.bos_token if self.tokenizer.bos_token_id is not None else None
        self._bos_text: str | None = bos or None
        self._generator: Any = None
        logger.info(
            "loaded %s: context %d tokens, cache %d tokens (%s)",
            self.model_name,
            self.max_seq_len,
            settings.cache_size,
            settings.cache_mode.value,
        )

    def _cache_class(self, exl: Any) -> Any:
        return {
            CacheMode.FP16: exl.ExLlamaV2Cache,
            CacheMode.Q4: exl.ExLlamaV2Cache_Q4,
            CacheMode.Q6: exl.ExLlamaV2Cache_Q6,
            CacheMode.Q8: exl.ExLlamaV2Cache_Q8,
        }[self.settings.cache_mode]

    def encode(self, prompt: str, *, from_template: bool = False) -> EncodedPrompt:
        """A raw prompt gets a BOS unless it starts with one (``add_bos``). A chat template's
        rendering gets none added and always has its special tokens read: the template wrote
        every BOS and control token the model wants (see ``chat_template``)."""
        if from_template:
            add_bos, special = False, True
        else:
            add_bos = self.settings.add_bos and not (
                self._bos_text is not None and prompt.startswith(self._bos_text)
            )
            special = self.settings.encode_special_tokens
        ids = self.tokenizer.encode(prompt, add_bos=add_bos, encode_special_tokens=special)
        return EncodedPrompt(ids, int(ids.shape[-1]))

    def new_job(self, prompt: EncodedPrompt, params: SamplingParams) -> Any:
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        return ExLlamaV2DynamicJob(
            input_ids=prompt.tokens,
            max_new_tokens=params.max_new_tokens,
            gen_settings=ExLlamaV2Sampler.Settings(**params.sampler_settings()),
            seed=params.seed,
            stop_conditions=params.stop_conditions(self.eos_token_ids),
        )

    def new_generator(self) -> DynamicGenerator:
        """A fresh generator over the loaded model and cache (also after a failure: the old
        one's sampling threads are shut down)."""
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        self._retire_generator()
        chunk = max(PAGE_SIZE, min(MAX_CHUNK_SIZE, self.max_seq_len) // PAGE_SIZE * PAGE_SIZE)
        generator = ExLlamaV2DynamicGenerator(
            model=self.model,
            cache=self.cache,
            tokenizer=self.tokenizer,
            max_batch_size=self.settings.max_batch_size,
            max_seq_len=self.max_seq_len,
            max_chunk_size=chunk,
            max_q_size=MAX_Q_SIZE,
            paged=True,
        )
        self._generator = generator
        return generator  # type: ignore[no-any-return]

    def _retire_generator(self) -> None:
        old, self._generator = self._generator, None
        for pool_name in ("sampling_pool", "filter_pool"):
            pool = getattr(old, pool_name, None)
            if pool is not None:
                pool.shutdown(wait=False)

    def close(self) -> None:
        self._retire_generator()
        try:
            self.model.unload()
        finally:
            import torch

            torch.cuda.empty_cache()


def load_runtime(settings: ExllamaSettings) -> ExllamaRuntime:
    return ExllamaRuntime(settings)


def check_serveable(settings: ExllamaSettings) -> None:
    """Fail before a server starts, with one clear line, when the model directory or the GPU
    libraries are missing (both checks are cheap: nothing is imported)."""
    if settings.model_dir is None:
        raise ConfigurationError(
            "modal_exllama needs a model directory: pass --model-dir or set "
            "PROMPTWIRE_MODAL_EXLLAMA__MODEL_DIR"
        )
    if not (settings.model_dir / "config.json").is_file():
        raise ConfigurationError(f"{settings.model_dir} is not a model directory (no config.json)")
    missing = [name for name in ("torch", "exllamav2") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(f"{' and '.join(missing)} not installed: {INSTALL_HINT}")


def create_engine(settings: ExllamaSettings) -> BatchingEngine:
    """The engine ``promptwire serve`` and the Modal app serve; loads on ``start``."""
    check_serveable(settings)
    return BatchingEngine(settings, load_runtime)
