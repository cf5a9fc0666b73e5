"""Settings of the dummy backend (``PROMPTWIRE_MODAL_DUMMY__<FIELD>``)."""

from __future__ import annotations

from typing import Any

from promptwire.modal.scaling import ModalScaling
from promptwire.settings import NONE_VALUE, backend_settings_config
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKEND_NAME = "modal_dummy"


class DummySettings(BaseSettings, ModalScaling):
    # ``null`` in the environment means None (the Modal app writes it for its container).
    model_config = backend_settings_config(BACKEND_NAME) | SettingsConfigDict(
        env_parse_none_str=NONE_VALUE
    )

    # What the engine answers.
    reply: str = Field(default="hello world", description="The fixed reply.")
    echo: bool = Field(default=False, description="Answer with the prompt itself instead.")
    first_token_delay: float = Field(
        default=0.0, ge=0, le=3600, description="Seconds before the first word (simulated load)."
    )
    tokens_per_second: float | None = Field(
        default=None, gt=0, description="Streaming rate in words per second; unset: no delay."
    )
    tool_mode: bool = Field(
        default=False,
        description=(
            "Honour tools and JSON response formats (protocol v1.2): call a bound tool with "
            "arguments made from its JSON Schema, or answer a value valid against the schema."
        ),
    )
    model_name: str = "dummy"

    # How it is deployed on Modal (with the scale-out settings of ``ModalScaling``).
    app_name: str = "promptwire-modal-dummy"
    api_key_secret: str | None = Field(
        default="promptwire-api-key",
        description="Name of the Modal Secret holding PROMPTWIRE_API_KEY; empty for no auth.",
    )
    memory_snapshot: bool = Field(
        default=True,
        description="Start containers from a Modal memory snapshot taken after the imports.",
    )
    timeout: int = Field(default=300, ge=10, le=86400)

    @field_validator("api_key_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
