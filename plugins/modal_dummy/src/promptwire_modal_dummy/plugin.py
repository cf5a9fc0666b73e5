"""Entry point of the ``modal_dummy`` backend; registered like any third-party plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from promptwire.backends import Backend
from promptwire.engine import Engine
from promptwire.hookspecs import hookimpl

from promptwire_modal_dummy.settings import BACKEND_NAME


def _create_engine(settings: Any) -> Engine:
    from promptwire_modal_dummy.engine import DummyEngine

    return DummyEngine(settings)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    from promptwire_modal_dummy.settings import DummySettings

    register(
        Backend(
            name=BACKEND_NAME,
            description="The hello-world endpoint: a fixed reply or an echo, no GPU.",
            settings_class=DummySettings,
            create_engine=_create_engine,
            modal_app="promptwire_modal_dummy.modal_app",
        )
    )
