"""The dummy endpoint on Modal: the LangChain guide's hello-world endpoint, on modal 1.x.

Deploy with ``promptwire deploy modal_dummy``
(or ``modal deploy -m promptwire_modal_dummy.modal_app``).
Settings are read here, on the machine that deploys, and handed to the container as environment
variables, so that its import of this module builds the same app; the bearer token comes from a
Modal Secret so it never passes through this file.

In a container, the server's imports run when this module is imported, so that a memory snapshot
(``MEMORY_SNAPSHOT``, on by default) holds them: a cold start restores them instead. Each phase
is logged as ``cold start: <phase> <seconds> s`` and exposed on ``/metrics``.
"""

from __future__ import annotations

import modal
from fastapi import FastAPI
from promptwire.modal import coldstart
from promptwire.modal.auth import api_key_secrets, require_api_key
from promptwire.modal.image import promptwire_image
from promptwire.settings import server_environment, settings_environment

from promptwire_modal_dummy.settings import DummySettings

if not modal.is_local():
    coldstart.record_process_start()

settings = DummySettings()

#: What the web function imports before it can serve (before the snapshot, when there is one).
SNAPSHOT_IMPORTS = ("promptwire.server", "promptwire_modal_dummy.engine")
if not modal.is_local():
    coldstart.import_modules(SNAPSHOT_IMPORTS)

image = promptwire_image("promptwire_modal_dummy")
secrets = api_key_secrets(settings.api_key_secret)

app = modal.App(settings.app_name, image=image)


@app.function(
    # Every setting, the deploy ones too: the container imports this module again and must
    # build the same function (Modal checks its Secrets against the deploy's). Not Image.env:
    # Modal allows no build step after add_local_python_source. The deploying machine's server
    # limits (PROMPTWIRE_MAX_IN_FLIGHT, ...) and metrics and request log settings go along too.
    env={**settings_environment(settings), **server_environment()},
    secrets=secrets,
    timeout=settings.timeout,
    enable_memory_snapshot=settings.memory_snapshot,
    **settings.modal_autoscaling(),
)
@modal.concurrent(**settings.modal_concurrency())
@modal.asgi_app()
def web() -> FastAPI:
    """The protocol app around the dummy engine; ``PROMPTWIRE_API_KEY`` comes from the Secret,
    the limits and observability settings from the deploying machine."""
    from promptwire.server import app_from_settings

    from promptwire_modal_dummy.engine import DummyEngine

    require_api_key(settings.api_key_secret)
    app = app_from_settings(DummyEngine(DummySettings()))
    coldstart.log_ready()
    return app
