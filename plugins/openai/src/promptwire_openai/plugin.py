"""Entry point of the ``openai`` backend; registered like any third-party plugin."""

from __future__ import annotations

from promptwire import Backend, hookimpl
from promptwire.plugins.backends import RegisterBackend

from promptwire_openai.settings import BACKEND_NAME


@hookimpl
def register_backends(register: RegisterBackend) -> None:
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
