"""Entry point of the ``modal_dummy`` backend; registered like any third-party plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptwire import Backend, Engine, hookimpl
from promptwire.plugins.backends import RegisterBackend

from promptwire_modal_dummy.settings import BACKEND_NAME

if TYPE_CHECKING:
    from promptwire_modal_dummy.settings import DummySettings


def _create_engine(settings: DummySettings) -> Engine:
    from promptwire_modal_dummy.engine import DummyEngine

    return DummyEngine(settings)


@hookimpl
def register_backends(register: RegisterBackend) -> None:
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
