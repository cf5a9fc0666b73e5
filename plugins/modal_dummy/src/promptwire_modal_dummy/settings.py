"""Settings of the dummy backend (``PROMPTWIRE_MODAL_DUMMY__<FIELD>``)."""

from __future__ import annotations

from typing import Any

from promptwire.settings import NONE_VALUE, backend_settings_config
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKEND_NAME = "modal_dummy"


class DummySettings(BaseSettings):
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

    # How it is deployed on Modal.
    app_name: str = "promptwire-modal-dummy"
    api_key_secret: str | None = Field(
        default="promptwire-api-key",
        description="Name of the Modal Secret holding PROMPTWIRE_API_KEY; empty for no auth.",
    )
    max_inputs: int = Field(default=100, ge=1, description="Requests one container serves at once.")
    min_containers: int = Field(default=0, ge=0, description="Containers kept warm (billed).")
    max_containers: int | None = Field(default=1, ge=1)
    memory_snapshot: bool = Field(
        default=True,
        description="Start containers from a Modal memory snapshot taken after the imports.",
    )
    scaledown_window: int = Field(default=60, ge=2, le=3600)
    timeout: int = Field(default=300, ge=10, le=86400)

    @field_validator("api_key_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _scaling_modal_accepts(self) -> DummySettings:
        if self.max_containers is not None and self.min_containers > self.max_containers:
            raise ValueError(
                f"min_containers ({self.min_containers}) is larger than max_containers "
                f"({self.max_containers}): lower MIN_CONTAINERS or raise MAX_CONTAINERS "
                "(null: no limit)"
            )
        return self
