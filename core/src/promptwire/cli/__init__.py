"""The ``promptwire`` command (``promptwire.cli:main``): its commands live in
``promptwire.cli._commands``, ``promptwire status`` in ``_status`` and ``promptwire new-backend``
in ``_new_backend``."""

from promptwire.cli._commands import app, build_app, main

__all__ = ["app", "build_app", "main"]
