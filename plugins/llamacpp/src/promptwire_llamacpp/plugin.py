"""Entry point of the ``llamacpp`` backend; registered like any third-party plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptwire import Backend, Engine, hookimpl
from promptwire.plugins.backends import RegisterBackend

from promptwire_llamacpp.settings import BACKEND_NAME

if TYPE_CHECKING:
    from promptwire_llamacpp.settings import LlamaCppSettings


def _create_engine(settings: LlamaCppSettings) -> Engine[Any]:
    """The engine, loaded: a model file that is missing, not GGUF or truncated, or a context too
    large for memory, ends ``promptwire serve`` with one line naming the file and the reason (a
    ``ModelLoadError`` is a ``ConfigurationError``) before the server starts, not with uvicorn's
    traceback from the app's startup. The app's ``start`` then finds it loaded."""
    from promptwire_llamacpp.engine import LlamaCppEngine

    engine = LlamaCppEngine(settings)
    engine.load()
    return engine


@hookimpl
def register_backends(register: RegisterBackend) -> None:
    from promptwire_llamacpp.settings import LlamaCppSettings

    register(
        Backend(
            name=BACKEND_NAME,
            description="Any GGUF model with llama.cpp, on CPU or GPU, continuously batched.",
            settings_class=LlamaCppSettings,
            create_engine=_create_engine,
            modal_app="promptwire_llamacpp.modal_app",
            # llama.cpp aborts the process on some inputs and holds the GIL in long steps: its
            # engine runs apart from the HTTP side, supervised (PROMPTWIRE_ENGINE_PROCESS=false:
            # in-process).
            engine_process=True,
        )
    )
