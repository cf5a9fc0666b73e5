"""The ExLlamaV2 runtime: a model directory loaded once, served by the dynamic generator.

This is the only module that imports ``exllamav2`` and ``torch``, and only when a model is
loaded, so the client, the CLI and CPU tests never pay for them. Batching, streaming and
cancellation live in ``engine``; this module only says how to load the model, count tokens and
build a job.

Everything that can make the generator refuse to start is decided before the weights are read
(on Modal, before every cold start pays for the load):

- **Attention mode.** The generator's paged mode (continuous batching over a shared, paged cache)
  runs on flash-attn >= 2.5.7, which needs an Ampere-or-newer GPU. Without it (Turing GPUs such as
  Modal's T4, or no flash-attn wheel for the installed torch) the engine uses exllamav2's unpaged
  mode: one sequence at a time, a cache of one sequence (``max_seq_len``), attention without
  flash-attn (torch's SDPA).
- **Batch size.** The generator reserves ``MAX_Q_SIZE`` tokens per sequence in a forward pass,
  and the model's scratch buffers hold ``max_input_len * max_batch_size`` tokens (``max_input_len``
  is at most ``max_seq_len``); the model's batch rows are raised to fit ``max_batch_size``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptwire.engine import EngineError
from promptwire.errors import ConfigurationError
from promptwire.modal import coldstart

from promptwire_modal_exllama.engine import BatchingEngine
from promptwire_modal_exllama.generation import DynamicGenerator, EncodedPrompt
from promptwire_modal_exllama.params import SamplingParams
from promptwire_modal_exllama.settings import (
    MAX_INPUT_LEN,
    MAX_Q_SIZE,
    PAGE_SIZE,
    CacheMode,
    ExllamaSettings,
    round_up_to_page,
)

logger = logging.getLogger(__name__)

#: Tokens ingested per forward pass of a prefill (ExLlamaV2's default ``max_input_len``).
MAX_CHUNK_SIZE = MAX_INPUT_LEN

#: The oldest flash-attn with the paged kernels exllamav2's paged mode calls.
MIN_FLASH_ATTN = (2, 5, 7)

INSTALL_HINT = (
    "install the GPU extra (pip install 'promptwire-modal-exllama[gpu]') with a CUDA build of "
    "torch (and flash-attn, for batching); see the plugin README for the exact wheels"
)


class ModelLoadError(EngineError):
    """The model could not be loaded (missing files, no GPU, missing libraries)."""


@dataclass(frozen=True)
class GpuPlatform:
    """What this machine offers the engine, found before anything is loaded."""

    capabilities: tuple[tuple[int, int], ...]
    """CUDA compute capability of each visible GPU."""
    flash_attn: str | None
    """The installed flash-attn's version, when it imports."""
    flash_attn_problem: str | None
    """Why an installed flash-attn does not import (a wheel built for another torch)."""


def _probe_flash_attn() -> tuple[str | None, str | None]:
    if importlib.util.find_spec("flash_attn") is None:
        return None, None
    try:
        import flash_attn
        import flash_attn_2_cuda  # noqa: F401  # its kernels; fails when built for another torch
    except Exception as exc:
        return None, f"flash-attn is installed but does not import ({type(exc).__name__}: {exc})"
    return str(getattr(flash_attn, "__version__", "0")), None


def _gpu_platform(torch: Any) -> GpuPlatform:
    """The GPUs and flash-attn; a clear error without a GPU."""
    if not torch.cuda.is_available():
        raise ModelLoadError("no CUDA GPU is available; ExLlamaV2 needs one")
    capabilities: tuple[tuple[int, int], ...] = tuple(
        (int(major), int(minor))
        for major, minor in (
            torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())
        )
    )
    version, problem = _probe_flash_attn()
    return GpuPlatform(capabilities, version, problem)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


def paged_attention_problem(platform: GpuPlatform) -> str | None:
    """Why the generator's paged mode cannot run here, or None when it can."""
    if platform.flash_attn_problem is not None:
        return platform.flash_attn_problem
    if platform.flash_attn is None:
        return "flash-attn is not installed"
    if _version_tuple(platform.flash_attn) < MIN_FLASH_ATTN:
        oldest = ".".join(map(str, MIN_FLASH_ATTN))
        return f"flash-attn {platform.flash_attn} is older than {oldest}"
    old = sorted({c for c in platform.capabilities if c[0] < 8})
    if old:
        found = ", ".join(f"{major}.{minor}" for major, minor in old)
        return (
            "flash-attn needs an Ampere or newer GPU (compute capability 8.0 or more), not "
            f"compute capability {found}"
        )
    return None


def _import_gpu_libraries() -> tuple[Any, GpuPlatform, str | None]:
    """exllamav2, the platform and why paged attention cannot run (None: it can), or a clear
    error saying what is missing. Checked before anything is loaded."""
    try:
        import torch
    except ImportError as exc:
        raise ModelLoadError(f"torch is not installed ({exc}); {INSTALL_HINT}") from exc
    platform = _gpu_platform(torch)
    problem = paged_attention_problem(platform)
    if problem is not None and platform.flash_attn is not None and "exllamav2" not in sys.modules:
        # exllamav2 would import it anyway and call it for unpaged attention too.
        os.environ.setdefault("EXLLAMA_NO_FLASH_ATTN", "1")
    try:
        import exllamav2
        import exllamav2.attn
        import exllamav2.generator
    except ImportError as exc:
        raise ModelLoadError(f"exllamav2 is not installed ({exc}); {INSTALL_HINT}") from exc
    if problem is None and not exllamav2.attn.has_flash_attn_with_paged:
        problem = "exllamav2 found no paged attention in the installed flash-attn"
    return exllamav2, platform, problem


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

        with coldstart.phase("gpu_libraries"):
            exl, platform, problem = _import_gpu_libraries()
        self.paged = problem is None
        self.weights_bytes = weights_size(model_dir)

        config = exl.ExLlamaV2Config(str(model_dir))
        config.arch_compat_overrides()
        requested = settings.max_seq_len or config.max_seq_len
        self.max_seq_len = int(min(requested, settings.cache_size))
        config.max_seq_len = self.max_seq_len

        if self.paged:
            self.max_batch_size: int | None = settings.max_batch_size
            self.cache_tokens = settings.cache_size
            if self.max_batch_size is not None and raise_batch_rows(config, self.max_batch_size):
                logger.info(
                    "max_batch_size %d: the model's forward pass holds %d x %d tokens",
                    self.max_batch_size,
                    config.max_batch_size,
                    min(config.max_input_len, config.max_seq_len),
                )
            mode = f"paged attention (flash-attn {platform.flash_attn}): continuous batching"
        else:
            config.no_flash_attn = True
            self.max_batch_size = 1
            self.cache_tokens = round_up_to_page(self.max_seq_len)
            mode = (
                f"unpaged attention ({problem}): one request at a time, the others wait; "
                f"cache of one sequence ({self.cache_tokens} tokens; CACHE_SIZE and "
                "MAX_BATCH_SIZE do not apply)"
            )
            if (settings.max_batch_size or 1) > 1:
                logger.warning("max_batch_size %d ignored: unpaged", settings.max_batch_size)
        self.mode = mode
        logger.info("%s: %s", self.model_name, mode)

        self.config = config
        # ExLlamaV2 reads each tensor from the files and places it on the GPU in one pass: the
        # weights' read and their upload are one phase (weights_bytes / its time: the speed).
        with coldstart.phase("model_load"):
            self.model = exl.ExLlamaV2(config)
            self.cache = self._cache_class(exl)(
                self.model, max_seq_len=self.cache_tokens, lazy=True
            )
            self.model.load_autosplit(self.cache, progress=False)
            self.tokenizer = exl.ExLlamaV2Tokenizer(config)
        self.eos_token_ids = _eos_token_ids(model_dir, config, self.tokenizer)
        bos = self.tokenizer.bos_token if self.tokenizer.bos_token_id is not None else None
        self._bos_text: str | None = bos or None
        self._generator: Any = None
        self.supports_constraints = importlib.util.find_spec("lmformatenforcer") is not None
        self._constraint_data: Any = None
        self._constraint_lock = threading.Lock()
        logger.info(
            "loaded %s: context %d tokens, cache %d tokens (%s)",
            self.model_name,
            self.max_seq_len,
            self.cache_tokens,
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

    def prepare_constraints(self) -> None:
        """Build what constrained decoding needs of the tokenizer, once (seconds for a large
        vocabulary: the engine calls this in a worker thread before the first such job)."""
        with self._constraint_lock:
            if self._constraint_data is None:
                from promptwire_modal_exllama.constrained import tokenizer_data

                self._constraint_data = tokenizer_data(self.tokenizer, self.eos_token_ids)

    def new_job(self, prompt: EncodedPrompt, params: SamplingParams) -> Any:
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        filters = []
        if params.constrained:
            from promptwire_modal_exllama.constrained import json_filter

            self.prepare_constraints()
            filters.append(
                json_filter(self.model, self.tokenizer, self._constraint_data, params.json_schema)
            )
        return ExLlamaV2DynamicJob(
            input_ids=prompt.tokens,
            max_new_tokens=params.max_new_tokens,
            gen_settings=ExLlamaV2Sampler.Settings(**params.sampler_settings()),
            seed=params.seed,
            stop_conditions=params.stop_conditions(self.eos_token_ids),
            decode_special_tokens=params.decode_special_tokens,
            filters=filters or None,
            filter_prefer_eos=bool(filters),
        )

    def new_generator(self) -> DynamicGenerator:
        """A fresh generator over the loaded model and cache (also after a failure: the old
        one is taken apart)."""
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        self._retire_generator()
        chunk = max(PAGE_SIZE, min(MAX_CHUNK_SIZE, self.max_seq_len) // PAGE_SIZE * PAGE_SIZE)
        generator = ExLlamaV2DynamicGenerator(
            model=self.model,
            cache=self.cache,
            tokenizer=self.tokenizer,
            max_batch_size=self.max_batch_size,
            max_seq_len=self.max_seq_len,
            max_chunk_size=chunk,
            max_q_size=MAX_Q_SIZE,
            paged=self.paged,
        )
        self._generator = generator
        return generator  # type: ignore[no-any-return]

    def _retire_generator(self) -> None:
        old, self._generator = self._generator, None
        if old is not None:
            _take_apart(old)

    def close(self) -> None:
        """Free the model, the cache and the generator now. The generator and its cache pages
        refer to each other, so without taking it apart the cache (gigabytes) would stay
        allocated until the next full garbage collection."""
        self._retire_generator()
        model, self.model = self.model, None
        self.cache = None
        try:
            if model is not None:
                model.unload()
        finally:
            del model
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _take_apart(generator: Any) -> None:
    """Stop a dynamic generator's threads and drop what it holds: its jobs, its page table
    (each page refers back to the generator) and its references to the model, the cache and
    its buffers. It cannot be used afterwards."""
    for pool_name in ("sampling_pool", "filter_pool"):
        pool = getattr(generator, pool_name, None)
        if pool is not None:
            pool.shutdown(wait=False)
    for name in ("pending_jobs", "active_jobs", "all_pages", "filter_queue"):
        items = getattr(generator, name, None)
        if isinstance(items, list):
            items.clear()
    for name in ("referenced_pages", "unreferenced_pages", "defrag_buffer"):
        table = getattr(generator, name, None)
        if isinstance(table, dict):
            table.clear()
    for name in (
        "model",
        "cache",
        "draft_model",
        "draft_cache",
        "tokenizer",
        "logits_pinned",
        "draft_input_ids_pinned",
        "draft_ids_pinned",
    ):
        if hasattr(generator, name):
            setattr(generator, name, None)


def weights_size(model_dir: Path) -> int:
    """Bytes of the model's weight files (``*.safetensors``)."""
    return sum(path.stat().st_size for path in model_dir.glob("*.safetensors") if path.is_file())


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
