"""An ExLlamaV2 model on a Modal GPU, behind the prompt endpoint.

Deploy with ``promptwire deploy modal_exllama``
(or ``modal deploy -m promptwire_modal_exllama.modal_app``).

Settings (``PROMPTWIRE_MODAL_EXLLAMA__*``) are read here, on the machine that deploys, and handed
to the containers as environment variables, so both sides build the same settings. The bearer
token comes from a Modal Secret and never passes through this file.

A cold start, phase by phase (each logged as ``cold start: <phase> <seconds> s`` and exposed on
``/metrics``): ``process_start`` (the interpreter and Modal's runtime), ``imports`` (torch and the
server), ``volume_reload``, ``download`` (only when the Volume lacks the model),
``gpu_libraries`` (exllamav2, flash-attn, the GPU's first use), ``model_load`` (the weights read
from the Volume onto the GPU), ``generator_start`` and ``first_token``. With memory snapshots
(the default) the imports run once, before the snapshot, and cold starts restore them; with GPU
snapshots the model's load does too.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import modal
from promptwire.modal import coldstart
from promptwire.modal.auth import api_key_secrets, require_api_key
from promptwire.modal.image import promptwire_image
from promptwire.modal.retire import OutOfOrderWatch
from promptwire.settings import server_environment

from promptwire_modal_exllama.settings import MODELS_MOUNT, ExllamaSettings, container_environment

if not modal.is_local():
    coldstart.record_process_start()

if TYPE_CHECKING:
    from fastapi import FastAPI

    from promptwire_modal_exllama.engine import BatchingEngine

settings = ExllamaSettings()

# The GPU stack, pinned to versions that ship prebuilt wheels, so nothing compiles when an image
# is built or a container starts: CUDA 12.8 builds of torch 2.7.0, and the exllamav2 and
# flash-attn wheels built against exactly that torch (for CPython 3.11, x86-64 Linux). torch 2.7
# wheels use the C++11 ABI, hence the ``cxx11abiTRUE`` flash-attn build.
PYTHON_VERSION = "3.11"
TORCH = "torch==2.7.0"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cu128"
EXLLAMAV2_WHEEL = (
    "https://github.com/turboderp-org/exllamav2/releases/download/v0.3.2/"
    "exllamav2-0.3.2+cu128.torch2.7.0-cp311-cp311-linux_x86_64.whl"
)
FLASH_ATTN_WHEEL = (
    "https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3/"
    "flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
)

# Everything else at the versions uv.lock pins (the versions the tests ran), exported beside this
# file: the server, jinja2 (chat templates), the Hugging Face Hub client, tokenizers (imported by
# exllamav2 without being declared) and exllamav2's own dependencies; the download image leaves
# out the GPU stack's.
GPU_REQUIREMENTS = Path(__file__).with_name("modal-requirements-gpu.txt")
DOWNLOAD_REQUIREMENTS = Path(__file__).with_name("modal-requirements-download.txt")

gpu_image = promptwire_image(
    "promptwire_modal_exllama",
    requirements=GPU_REQUIREMENTS,
    packages=(f"exllamav2 @ {EXLLAMAV2_WHEEL}", f"flash-attn @ {FLASH_ATTN_WHEEL}"),
    base=modal.Image.debian_slim(python_version=PYTHON_VERSION).uv_pip_install(
        TORCH, index_url=TORCH_INDEX_URL
    ),
)

# Downloading needs no GPU and none of the GPU stack.
download_image = promptwire_image("promptwire_modal_exllama", requirements=DOWNLOAD_REQUIREMENTS)

# The weights live in a Volume: downloaded once, then read by every cold start.
volume = modal.Volume.from_name(settings.volume_name, create_if_missing=True)

hf_secrets = [modal.Secret.from_name(settings.hf_token_secret)] if settings.hf_token_secret else []
api_secrets = api_key_secrets(settings.api_key_secret)

app = modal.App(settings.app_name)

#: What the server imports before it can load a model; with memory snapshots they run once,
#: before the snapshot. None of them touches the GPU (which a CPU memory snapshot cannot hold):
#: exllamav2, which does, is imported with the model.
SNAPSHOT_IMPORTS = (
    "torch",
    "promptwire.server",
    "promptwire_modal_exllama.runtime",
    "promptwire_modal_exllama.weights",
    "promptwire_modal_exllama.chat_template",
)

#: The server's environment: the backend's settings, the server's limits (PROMPTWIRE_MAX_IN_FLIGHT,
#: ...) and how it shows itself (metrics, logs), as the deploying machine has them.
server_env = {**container_environment(settings), **server_environment()}


def _fetch(repo_id: str, revision: str, *, force: bool = False) -> dict[str, Any]:
    """Download into the mounted Volume and commit, so other containers see the files."""
    from promptwire_modal_exllama.weights import download

    result = download(
        repo_id, revision, Path(MODELS_MOUNT), token=os.environ.get("HF_TOKEN"), force=force
    )
    if result["downloaded"]:
        volume.commit()
    return result


@app.function(
    image=download_image,
    volumes={MODELS_MOUNT: volume},
    secrets=hf_secrets,
    # The settings, as for the server: this function's container imports this module again and
    # must find the same Secrets and Volume (Modal checks them against the deploy's).
    env=container_environment(settings),
    timeout=settings.download_timeout,
)
def download_model(
    repo_id: str = settings.hf_repo, revision: str = settings.hf_revision, force: bool = False
) -> dict[str, Any]:
    """Download a model repository at a revision (EXL2 repositories: a branch per bpw) into the
    Volume. Already there: nothing is downloaded unless ``force``."""
    print(f"downloading {repo_id}@{revision} into volume {settings.volume_name!r}", flush=True)
    return _fetch(repo_id, revision, force=force)


def load_model() -> BatchingEngine:
    """Find (or fetch) the model in the Volume and load it onto the GPU, starting nothing."""
    from promptwire_modal_exllama.runtime import create_engine
    from promptwire_modal_exllama.weights import is_complete, model_path

    path = model_path(Path(MODELS_MOUNT), settings.hf_repo, settings.hf_revision)
    with coldstart.phase("volume_reload"):
        volume.reload()  # see downloads finished after this container started
    if not is_complete(path):
        if not settings.download_on_start:
            raise RuntimeError(
                f"{settings.hf_repo}@{settings.hf_revision} is not in volume "
                f"{settings.volume_name!r}: run `promptwire exllama download` first"
            )
        with coldstart.phase("download"):
            _fetch(settings.hf_repo, settings.hf_revision)
    engine = create_engine(
        settings.model_copy(update={"model_dir": path, "model_name": settings.display_name()})
    )
    engine.load_model()
    return engine


@app.cls(
    image=gpu_image,
    gpu=settings.gpu,
    volumes={MODELS_MOUNT: volume},
    secrets=[*api_secrets, *hf_secrets],
    env=server_env,
    timeout=settings.timeout,
    startup_timeout=settings.startup_timeout,
    enable_memory_snapshot=settings.memory_snapshot,
    experimental_options={"enable_gpu_snapshot": True} if settings.gpu_snapshot else None,
    **settings.modal_autoscaling(),
)
@modal.concurrent(**settings.modal_concurrency())
class Server:
    """One GPU container: loads the model once, then serves every request it is sent, batched."""

    engine: BatchingEngine | None = None
    watch: OutOfOrderWatch | None = None

    # Modal runs the enter hooks in the order they are defined here: without snapshots, both
    # at the container's start; with them, ``prepare`` once, before the snapshot is taken.
    @modal.enter(snap=settings.memory_snapshot)
    def prepare(self) -> None:
        """Before the memory snapshot: the imports, and with GPU snapshots the model on the
        GPU."""
        coldstart.import_modules(SNAPSHOT_IMPORTS)
        if settings.gpu_snapshot:
            self.engine = load_model()

    @modal.enter(snap=False)
    async def start(self) -> None:
        """After the snapshot is restored, before any request: the model (unless the snapshot
        holds it), the generator, and one token to warm the GPU up."""
        if self.engine is None:
            self.engine = await asyncio.to_thread(load_model)
        await self.engine.start()
        if settings.warmup:
            with coldstart.phase("first_token"):
                await self.engine.warm_up()
        # A forward pass that raises (a CUDA error) leaves the engine out of order; then this
        # container stops taking requests and Modal sends them to a fresh one.
        self.watch = OutOfOrderWatch(self.engine)
        self.watch.start()
        coldstart.log_ready()

    @modal.exit()
    async def unload(self) -> None:
        if self.watch is not None:
            self.watch.close()
        if self.engine is not None:
            await self.engine.stop()

    @modal.asgi_app(requires_proxy_auth=settings.proxy_auth)
    def web(self) -> FastAPI:
        """The protocol app around the loaded engine; ``PROMPTWIRE_API_KEY`` comes from the
        Secret, the limits and the metrics and request log settings from the deploying
        machine."""
        from promptwire.server import app_from_settings

        assert self.engine is not None, "the enter hooks load the engine"
        require_api_key(settings.api_key_secret)
        return app_from_settings(self.engine)


def endpoint_url() -> str | None:
    """The web endpoint's URL, once deployed (``promptwire deploy`` prints it)."""
    url = cast(Any, Server)().web.get_web_url()
    return str(url) if url else None
