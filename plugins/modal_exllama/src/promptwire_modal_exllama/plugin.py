"""Entry point of the ``modal_exllama`` backend, registered like any third-party plugin.

Importing this module stays cheap (no modal, torch, exllamav2 or FastAPI): the engine, the Modal
app and the CLI commands are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptwire import Backend, Engine, hookimpl
from promptwire.plugins.backends import RegisterBackend

from promptwire_modal_exllama.settings import BACKEND_NAME

if TYPE_CHECKING:
    import typer

    from promptwire_modal_exllama.settings import ExllamaSettings


def _create_engine(settings: ExllamaSettings) -> Engine[Any]:
    from promptwire_modal_exllama.runtime import create_engine

    return create_engine(settings)


@hookimpl
def register_backends(register: RegisterBackend) -> None:
    from promptwire_modal_exllama.client import ExllamaClient
    from promptwire_modal_exllama.settings import ExllamaSettings

    register(
        Backend(
            name=BACKEND_NAME,
            description="An ExLlamaV2 model on a Modal GPU or your own: batched and streamed.",
            settings_class=ExllamaSettings,
            client=ExllamaClient(),
            create_engine=_create_engine,
            modal_app="promptwire_modal_exllama.modal_app",
        )
    )


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from promptwire_modal_exllama.commands import commands

    cli.add_typer(commands, name="exllama")
