"""Settings of the ``modal_exllama`` backend (``PROMPTWIRE_MODAL_EXLLAMA__<FIELD>``).

One class for the three places the backend runs: the engine (what to load, how to sample), the
Modal deployment (GPU, scaling, Volume, Secrets) and the client (parameters sent with every
request). Importing this module is cheap: no modal, no torch.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from promptwire.modal.scaling import MaxInputs, ModalScaling, ScaledownWindow
from promptwire.settings import NONE_VALUE, backend_settings_config, settings_environment
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKEND_NAME = "modal_exllama"

#: The dynamic generator allocates its cache in pages of this many tokens.
PAGE_SIZE = 256

#: Most tokens in one forward pass of an ExLlamaV2 model (its default ``max_input_len``).
MAX_INPUT_LEN = 2048
#: Tokens the dynamic generator reserves per sequence in a forward pass (its ``max_q_size``).
MAX_Q_SIZE = 8
#: So the most sequences one forward pass can hold.
MAX_BATCH_SIZE = MAX_INPUT_LEN // MAX_Q_SIZE

DEFAULT_HF_REPO = "turboderp/Llama-3.1-8B-Instruct-exl2"
DEFAULT_HF_REVISION = "4.0bpw"

#: Where the model Volume is mounted in Modal containers.
MODELS_MOUNT = PurePosixPath("/models")


class CacheMode(StrEnum):
    """How the key/value cache is stored: FP16, or quantized to 4, 6 or 8 bits (less memory, so
    more tokens in flight, at a small cost in quality)."""

    FP16 = "FP16"
    Q4 = "Q4"
    Q6 = "Q6"
    Q8 = "Q8"


def round_up_to_page(tokens: int) -> int:
    """The smallest multiple of the cache page size that holds ``tokens``."""
    return max(1, math.ceil(tokens / PAGE_SIZE)) * PAGE_SIZE


class ExllamaSettings(BaseSettings, ModalScaling):
    # ``null`` in the environment means None (``container_environment`` writes it).
    model_config = backend_settings_config(BACKEND_NAME) | SettingsConfigDict(
        env_parse_none_str=NONE_VALUE
    )

    # -- The engine: what it loads --------------------------------------------------------------
    model_dir: Path | None = Field(
        default=None,
        description="Model directory to load (an EXL2 or FP16 Hugging Face layout). Required for "
        "`promptwire serve`; on Modal the model comes from the Volume (hf_repo@hf_revision).",
    )
    model_name: str | None = Field(
        default=None,
        description="Name reported as `model` in replies; default: hf_repo@hf_revision on Modal, "
        "the directory name locally.",
    )
    cache_mode: CacheMode = Field(
        default=CacheMode.FP16, description="Key/value cache storage: FP16, Q4, Q6 or Q8."
    )
    cache_size: int = Field(
        default=65536,
        ge=PAGE_SIZE,
        le=1 << 24,
        description="Tokens the cache holds for all requests in flight together (rounded up to a "
        f"multiple of {PAGE_SIZE}). More means more concurrent requests and more GPU memory.",
    )
    max_seq_len: int | None = Field(
        default=None,
        ge=PAGE_SIZE,
        description="Longest prompt plus completion of one request; default: the model's own "
        "limit, capped at cache_size.",
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        description=f"Most sequences per forward pass, at most {MAX_BATCH_SIZE}; default: as many "
        "as fit (max_seq_len / 8, up to 256). Unpaged (no flash-attn) it is 1.",
    )

    # -- The engine: defaults for parameters a request leaves out -------------------------------
    max_tokens: int = Field(default=512, ge=1, description="Completion length when not asked.")
    temperature: float = Field(default=0.7, ge=0.0, le=10.0, description="0 means greedy.")
    top_p: float = Field(default=0.9, gt=0.0, le=1.0, description="1.0 turns nucleus sampling off.")
    top_k: int = Field(default=0, ge=0, description="0 turns top-k sampling off.")
    repetition_penalty: float = Field(
        default=1.0, ge=0.5, le=3.0, description="1.0 is off (the protocol has no key for it)."
    )
    add_bos: bool = Field(
        default=True,
        description="Start every raw prompt with the BOS token (unless it already does); a chat "
        "template's rendering of `messages` has exactly the BOS tokens the template writes.",
    )
    encode_special_tokens: bool = Field(
        default=True,
        description="Read special tokens written in a raw prompt as such (a chat template's "
        "rendering of `messages` always is).",
    )

    # -- The weights: where they come from ------------------------------------------------------
    hf_repo: str = Field(
        default=DEFAULT_HF_REPO,
        min_length=3,
        description="Hugging Face repository id of the model downloaded into the Volume.",
    )
    hf_revision: str = Field(
        default=DEFAULT_HF_REVISION,
        min_length=1,
        description="Branch, tag or commit; EXL2 repositories keep one branch per bits-per-weight.",
    )
    hf_token_secret: str | None = Field(
        default=None,
        description="Name of a Modal Secret holding HF_TOKEN, for gated or private repositories.",
    )
    volume_name: str = Field(
        default="promptwire-models", min_length=1, description="Modal Volume the weights live in."
    )
    download_on_start: bool = Field(
        default=True,
        description="Download the model on the first cold start if the Volume lacks it "
        "(`promptwire exllama download` does it ahead of time, without a GPU).",
    )
    download_timeout: int = Field(default=3600, ge=60, le=86400)

    # -- The Modal deployment ------------------------------------------------------------------
    app_name: str = Field(default="promptwire-modal-exllama", min_length=1)
    api_key_secret: str | None = Field(
        default="promptwire-api-key",
        description="Name of the Modal Secret holding PROMPTWIRE_API_KEY; empty for no auth.",
    )
    proxy_auth: bool = Field(
        default=False,
        description="Also require Modal proxy auth (Modal-Key/Modal-Secret headers; the client "
        "sends PROMPTWIRE_MODAL_KEY and PROMPTWIRE_MODAL_SECRET).",
    )
    gpu: str = Field(
        default="L40S",
        min_length=1,
        description="Modal GPU type: Ampere or newer (A10G, L4, L40S, A100, H100, ...) batches "
        "requests; a T4 serves them one at a time (no flash-attn, unpaged).",
    )
    timeout: int = Field(
        default=600, ge=10, le=86400, description="Seconds one request may run on Modal."
    )
    startup_timeout: int = Field(
        default=1200, ge=60, le=86400, description="Seconds a cold start may take (model load)."
    )
    # The scale-out settings (``ModalScaling``), with this backend's defaults.
    scaledown_window: ScaledownWindow = 300
    max_inputs: Annotated[MaxInputs, Field(le=1000)] = 64
    memory_snapshot: bool = Field(
        default=True,
        description="Start containers from a Modal memory snapshot taken after the imports "
        "(torch, the server), instead of importing again on every cold start.",
    )
    gpu_snapshot: bool = Field(
        default=False,
        description="Also snapshot GPU memory, with the model loaded (Modal's GPU memory "
        "snapshots, alpha): a cold start restores the model instead of reading the weights. "
        "Needs memory_snapshot.",
    )
    warmup: bool = Field(
        default=True,
        description="Generate one token before serving, so the first request does not pay for "
        "the GPU's first kernels.",
    )

    # -- The client ----------------------------------------------------------------------------
    request_params: dict[str, Any] = Field(
        default_factory=dict,
        description='Parameters the client sends with every request, as JSON (e.g. {"top_k": 40}).',
    )

    @field_validator("cache_mode", mode="before")
    @classmethod
    def _upper_cache_mode(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("cache_size")
    @classmethod
    def _whole_pages(cls, value: int) -> int:
        return round_up_to_page(value)

    @field_validator("max_batch_size")
    @classmethod
    def _batch_fits_a_forward_pass(cls, value: int | None) -> int | None:
        if value is not None and value > MAX_BATCH_SIZE:
            raise ValueError(
                f"max_batch_size {value} is too large: ExLlamaV2's dynamic generator reserves "
                f"{MAX_Q_SIZE} tokens per sequence in a forward pass of at most {MAX_INPUT_LEN} "
                f"tokens, so it runs at most {MAX_BATCH_SIZE} sequences at once; set at most "
                f"{MAX_BATCH_SIZE}, or leave it unset"
            )
        return value

    @field_validator("hf_token_secret", "api_key_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _context_fits_cache(self) -> ExllamaSettings:
        if self.max_seq_len is not None and self.max_seq_len > self.cache_size:
            raise ValueError(
                f"max_seq_len ({self.max_seq_len}) is larger than cache_size ({self.cache_size}): "
                "one request could never fit in the cache; raise cache_size or lower max_seq_len"
            )
        return self

    @model_validator(mode="after")
    def _gpu_snapshot_needs_memory_snapshot(self) -> ExllamaSettings:
        if self.gpu_snapshot and not self.memory_snapshot:
            raise ValueError(
                "gpu_snapshot needs memory_snapshot: a GPU memory snapshot is part of a memory "
                "snapshot; set MEMORY_SNAPSHOT=true or GPU_SNAPSHOT=false"
            )
        return self

    def volume_model_dir(self, root: PurePosixPath = MODELS_MOUNT) -> PurePosixPath:
        """Where ``hf_repo@hf_revision`` lives in the Volume mounted at ``root``."""
        return root / self.hf_repo / self.hf_revision

    def display_name(self) -> str:
        if self.model_name:
            return self.model_name
        if self.model_dir is not None:
            return self.model_dir.name
        return f"{self.hf_repo}@{self.hf_revision}"


#: Fields that only matter on the machine that deploys (the rest reaches the container).
DEPLOY_ONLY_FIELDS = frozenset({"model_dir", "request_params"})


def container_environment(settings: ExllamaSettings) -> dict[str, str | None]:
    """The settings as ``PROMPTWIRE_MODAL_EXLLAMA__*`` variables, so the container that imports
    the Modal app builds exactly the settings the deploying machine had."""
    return settings_environment(settings, exclude=DEPLOY_ONLY_FIELDS)
