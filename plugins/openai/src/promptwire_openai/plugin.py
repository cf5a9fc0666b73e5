"""Entry point of the ``openai`` backend; registered like any third-party plugin."""

from __future__ import annotations

from collections.abc import Callable

from promptwire.backends import Backend
from promptwire.hookspecs import hookimpl

from promptwire_openai.settings import BACKEND_NAME


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    from promptwire_openai.adapter import OpenAIAdapter
    from promptwire_openai.settings import OpenAISettings

    register(
        Backend(
            name=BACKEND_NAME,
            description="Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, ...): "
            "client only.",
            settings_class=OpenAISettings,
            client=OpenAIAdapter(),
        )
    )
