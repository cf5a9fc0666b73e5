"""Settings of the ``router`` backend (``PROMPTWIRE_ROUTER__<FIELD>``): its members, how a call
picks one, and when a failing member is set aside."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from promptwire.settings import backend_settings_config

BACKEND_NAME = "router"

Strategy = Literal["least-busy", "latency", "weighted", "ordered"]
"""``least-busy``: fewest calls in flight; ``latency``: lowest recent time to first token (or to
the whole reply); ``weighted``: at random in proportion to ``weight``; ``ordered``: the first
member that is not cooling down."""


class RouterEndpoint(BaseModel):
    """One member: its URL and, optionally, the backend whose client adapter reaches it (with
    that backend's settings), its weight and its own credentials (else the model's)."""

    # An error shows no input: a member's input holds its credentials.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str
    backend: str | None = None
    """A backend's client adapter for this member (``openai``); none: the prompt protocol."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """That backend's settings (``{"model": "..."}`` for ``openai``), over its environment."""
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    api_key: SecretStr | None = None
    modal_key: SecretStr | None = None
    modal_secret: SecretStr | None = None


class RouterSettings(BaseSettings):
    model_config = backend_settings_config(BACKEND_NAME)

    endpoints: list[RouterEndpoint] = Field(
        default_factory=list,
        description="JSON list of endpoint URLs, or objects with url and optionally backend, "
        "settings, weight, api_key, modal_key, modal_secret.",
    )
    strategy: Strategy = Field(default="least-busy", description="How a call picks a member.")
    failures: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Failures in a row (refused, timed out, 429, 503) after which a member is "
        "cooled down; an answer with Retry-After cools it at once, for that long.",
    )
    cooldown: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds a member is left out after its failures.",
    )
    attempt_timeout: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds one member may take (to its reply, or a stream's first event) "
        "before the attempt is cut, counted as a timeout; none: the call's whole timeout.",
    )

    @field_validator("endpoints", mode="before")
    @classmethod
    def _urls_as_members(cls, value: Any) -> Any:
        """A bare URL is a member with nothing but its URL."""
        if isinstance(value, list):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value
