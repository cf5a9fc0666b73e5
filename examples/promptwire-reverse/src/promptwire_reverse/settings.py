"""Settings of the ``reverse`` backend, read from ``PROMPTWIRE_REVERSE__<FIELD>`` (and ``.env``)."""

from __future__ import annotations

from promptwire.settings import backend_settings_config
from pydantic import Field
from pydantic_settings import BaseSettings

BACKEND_NAME = "reverse"


class ReverseSettings(BaseSettings):
    model_config = backend_settings_config(BACKEND_NAME)

    uppercase: bool = Field(default=False, description="Shout the reversed words.")
    model_name: str = Field(default="reverse-1", description="Reported as `model` in replies.")
