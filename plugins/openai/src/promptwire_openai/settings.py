"""Settings of the ``openai`` backend (``PROMPTWIRE_OPENAI__<FIELD>``)."""

from __future__ import annotations

from promptwire.settings import backend_settings_config
from pydantic import Field
from pydantic_settings import BaseSettings

BACKEND_NAME = "openai"


class OpenAISettings(BaseSettings):
    model_config = backend_settings_config(BACKEND_NAME)

    model: str | None = Field(
        default=None,
        description="The model to ask for (the server's name for it, as /v1/models lists it); "
        "unset: no model is sent and the server answers with its own.",
    )
    stream_usage: bool = Field(
        default=True,
        description="Ask a stream for its token usage (stream_options.include_usage); turn "
        "off for a server that refuses the option.",
    )
