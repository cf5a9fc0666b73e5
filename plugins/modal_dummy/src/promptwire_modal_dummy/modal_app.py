"""The dummy endpoint on Modal: the LangChain guide's hello-world endpoint, on modal 1.x.

Deploy with ``promptwire deploy modal_dummy``
(or ``modal deploy -m promptwire_modal_dummy.modal_app``).
Settings are read here, on the machine that deploys, and handed to the container as environment
variables, so that its import of this module builds the same app; the bearer token comes from a
Modal Secret so it never passes through this file.
"""

from __future__ import annotations

import os

import modal
from fastapi import FastAPI
from promptwire.modal_image import promptwire_image
from promptwire.settings import settings_environment

from promptwire_modal_dummy.settings import DummySettings

settings = DummySettings()

image = promptwire_image("promptwire_modal_dummy")
secrets = [modal.Secret.from_name(settings.api_key_secret)] if settings.api_key_secret else []

app = modal.App(settings.app_name, image=image)


@app.function(
    # Every setting, the deploy ones too: the container imports this module again and must
    # build the same function (Modal checks its Secrets against the deploy's). Not Image.env:
    # Modal allows no build step after add_local_python_source.
    env=settings_environment(settings),
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
