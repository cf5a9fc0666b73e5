"""Settings of the dummy backend (``PROMPTWIRE_MODAL_DUMMY__<FIELD>``)."""

from __future__ import annotations

from promptwire.settings import backend_settings_config
from pydantic import Field
from pydantic_settings import BaseSettings

BACKEND_NAME = "modal_dummy"


class DummySettings(BaseSettings):
    model_config = backend_settings_config(BACKEND_NAME)

    # What the engine answers.
    reply: str = Field(default="hello world", description="The fixed reply.")
    echo: bool = Field(default=False, description="Answer with the prompt itself instead.")
    first_token_delay: float = Field(
        default=0.0, ge=0, le=3600, description="Seconds before the first word (simulated load)."
    )
    tokens_per_second: float | None = Field(
        default=None, gt=0, description="Streaming rate in words per second; unset: no delay."
    )
    model_name: str = "dummy"

    # How it is deployed on Modal.
    app_name: str = "promptwire-modal-dummy"
    api_key_secret: str | None = Field(
        default="promptwire-api-key",
        description="Name of the Modal Secret holding PROMPTWIRE_API_KEY; empty for no auth.",
    )
    max_inputs: int = Field(default=100, ge=1, description="Requests one container serves at once.")
    max_containers: int | None = Field(default=1, ge=1)
    scaledown_window: int = Field(default=60, ge=2, le=3600)
    timeout: int = Field(default=300, ge=10, le=86400)
