"""The entry point: registers the ``reverse`` backend with promptwire."""

from __future__ import annotations

from promptwire import Backend, Engine, RegisterBackend, hookimpl

from promptwire_reverse.settings import BACKEND_NAME, ReverseSettings


def _create_engine(settings: ReverseSettings) -> Engine:
    from promptwire_reverse.engine import ReverseEngine

    return ReverseEngine(settings)


@hookimpl
def register_backends(register: RegisterBackend) -> None:
    register(
        Backend(
            name=BACKEND_NAME,
            description="Example third-party backend: the prompt's words, reversed.",
            settings_class=ReverseSettings,
            create_engine=_create_engine,
        )
    )
