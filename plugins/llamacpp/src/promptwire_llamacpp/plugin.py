"""Entry point of the ``llamacpp`` backend; registered like any third-party plugin."""

from __future__ import annotations

from promptwire.backends import RegisterBackend


def register_backends_placeholder(register: RegisterBackend) -> None:  # replaced below
    pass
