"""The hooks a promptwire plugin can implement. Each passes a ``register`` callback or the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from promptwire.plugins.backends import RegisterBackend

PROJECT_NAME = "promptwire"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backends(register: RegisterBackend) -> None:
    """Register backends by calling ``register(Backend(...))`` once for each."""


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands to the ``promptwire`` CLI: ``cli`` is its ``typer.Typer`` app, so
    ``@cli.command()`` adds a command and ``cli.add_typer(group, name=...)`` a group of them.
    A plugin whose hook raises loses only its own commands; the failure is recorded
    (``promptwire backends`` lists it)."""


__all__ = [
    "PROJECT_NAME",
    "hookimpl",
    "hookspec",
    "register_backends",
    "register_commands",
]
