"""The dummy endpoint on Modal: the LangChain guide's hello-world endpoint, on modal 1.x.

Deploy with ``promptwire deploy modal_dummy``
(or ``modal deploy -m promptwire_modal_dummy.modal_app``).
Settings are read here, on the machine that deploys, and handed to the container as environment
variables; the bearer token comes from a Modal Secret so it never passes through this file.
"""

from __future__ import annotations

import os

import modal
from fastapi import FastAPI
from promptwire.modal_image import promptwire_image

from promptwire_modal_dummy.settings import DummySettings

settings = DummySettings()

# The container gets the engine's settings (not the deploy ones) through its environment.
engine_env: dict[str, str | None] = {
    "PROMPTWIRE_MODAL_DUMMY__REPLY": settings.reply,
    "PROMPTWIRE_MODAL_DUMMY__ECHO": str(settings.echo).lower(),
    "PROMPTWIRE_MODAL_DUMMY__FIRST_TOKEN_DELAY": str(settings.first_token_delay),
    "PROMPTWIRE_MODAL_DUMMY__MODEL_NAME": settings.model_name,
}
if settings.tokens_per_second is not None:
    engine_env["PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND"] = str(settings.tokens_per_second)

image = promptwire_image("promptwire_modal_dummy")
secrets = [modal.Secret.from_name(settings.api_key_secret)] if settings.api_key_secret else []

app = modal.App(settings.app_name, image=image)


@app.function(
    env=engine_env,  # not Image.env: Modal allows no build step after add_local_python_source
    secrets=secrets,
    timeout=settings.timeout,
    scaledown_window=settings.scaledown_window,
    max_containers=settings.max_containers,
)
@modal.concurrent(max_inputs=settings.max_inputs)
@modal.asgi_app()
def web() -> FastAPI:
    """The protocol app around the dummy engine; ``PROMPTWIRE_API_KEY`` comes from the Secret."""
    from promptwire.server import create_app

    from promptwire_modal_dummy.engine import DummyEngine

    return create_app(DummyEngine(DummySettings()), api_key=os.environ.get("PROMPTWIRE_API_KEY"))
