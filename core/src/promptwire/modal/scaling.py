"""How a Modal app scales out, declared once for every backend that deploys to Modal.

A backend's settings class mixes ``ModalScaling`` in (``class MySettings(BaseSettings,
ModalScaling)``), so ``PROMPTWIRE_<BACKEND>__MIN_CONTAINERS`` and the rest are read and checked
the same way for every app; its Modal app passes ``settings.modal_autoscaling()`` to
``@app.function``/``@app.cls`` and ``settings.modal_concurrency()`` to ``@modal.concurrent``.
The checks run when the settings are read, on the machine that deploys: ``promptwire deploy``
refuses what Modal would refuse, or would accept and never do (a buffer with no room under
``max_containers``), before anything is sent.

What each one costs (Modal's guides, https://modal.com/docs/guide/scale and
https://modal.com/docs/guide/region-selection): every running container is billed, idle or not.
``min_containers`` keeps that many running around the clock; ``buffer_containers`` keeps that
many idle ones ready while the app has requests; ``scaledown_window`` is how long an idle
container stays (billed) before it stops; a ``region`` puts a multiplier on the whole usage price
of the function (the guide lists it per kind of region). Importing this module imports no modal.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

#: Modal's bounds on ``scaledown_window`` (seconds; modal 1.x refuses others when the function is
#: defined: ``_Function.from_local``).
MIN_SCALEDOWN_WINDOW = 2
MAX_SCALEDOWN_WINDOW = 3600

#: The shape of Modal's region names (``us``, ``us-east``, ``eu-west-1``, ``us-east1``,
#: ``us-ashburn-1``). Modal's client has no list of them and the list changes, so only the shape
#: is checked here; Modal refuses a well-formed name it does not know when deploying.
REGION_NAME = re.compile(r"[a-z]{2}(-[a-z0-9]+)*")

MinContainers = Annotated[
    int,
    Field(
        ge=0,
        description="Containers kept running even with no request; each is billed around the "
        "clock (for a GPU app, the GPU's price while it idles).",
    ),
]
MaxContainers = Annotated[
    int | None,
    Field(ge=1, description="Most containers at once (null: no limit)."),
]
BufferContainers = Annotated[
    int,
    Field(
        ge=0,
        description="Idle containers kept ready beyond the busy ones while the app has requests, "
        "so a burst does not wait for cold starts; billed while idle. Needs max_containers above "
        "it.",
    ),
]
ScaledownWindow = Annotated[
    int,
    Field(
        ge=MIN_SCALEDOWN_WINDOW,
        le=MAX_SCALEDOWN_WINDOW,
        description="Seconds an idle container waits (billed) for a request before it stops "
        f"({MIN_SCALEDOWN_WINDOW} to {MAX_SCALEDOWN_WINDOW}).",
    ),
]
MaxInputs = Annotated[
    int,
    Field(ge=1, description="Requests one container serves at once (@modal.concurrent)."),
]
TargetInputs = Annotated[
    int | None,
    Field(
        ge=1,
        description="Requests per container Modal's autoscaler aims for; a container may take up "
        "to max_inputs while new ones start (null: aim for max_inputs).",
    ),
]


def _regions(value: Any) -> Any:
    """A region list from the environment: JSON (``["us-east", "eu-west"]``), or names separated
    by commas (``us-east,eu-west``), or one name; empty means anywhere."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except RecursionError:  # not a ValueError: pydantic would let it through
                raise ValueError("JSON nested too deeply") from None
        return [name.strip() for name in text.split(",") if name.strip()]
    return value


Regions = Annotated[
    tuple[str, ...],
    NoDecode,
    Field(
        description="Modal regions the containers may run in (e.g. us-east, or eu,us); empty: "
        "anywhere. Any region multiplies the function's usage price (Modal's region guide).",
    ),
]


class ModalScaling(BaseModel):
    """The scale-out settings of a Modal app: containers (autoscaling), inputs per container
    (``@modal.concurrent``) and region. A backend redeclares a field to change its default,
    keeping its type (``max_inputs: MaxInputs = 32``), hence its checks and description."""

    min_containers: MinContainers = 0
    max_containers: MaxContainers = 1
    buffer_containers: BufferContainers = 0
    scaledown_window: ScaledownWindow = 60
    max_inputs: MaxInputs = 100
    target_inputs: TargetInputs = None
    region: Regions = ()

    @field_validator("region", mode="before")
    @classmethod
    def _read_regions(cls, value: Any) -> Any:
        return _regions(value)

    @field_validator("region")
    @classmethod
    def _known_shape(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not REGION_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a Modal region name (lower case, such as us, us-east, "
                    "eu-west or ap-northeast-1; see https://modal.com/docs/guide/region-selection)"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"a region is named twice in {list(value)}")
        return value

    @model_validator(mode="after")
    def _scaling_modal_accepts(self) -> ModalScaling:
        """What Modal refuses when the app is defined, or accepts and could never do; refused
        here with the settings' names."""
        maximum = self.max_containers
        if maximum is not None and self.min_containers > maximum:
            raise ValueError(
                f"min_containers ({self.min_containers}) is larger than max_containers "
                f"({maximum}): Modal cannot keep more containers warm than it may run; lower "
                "MIN_CONTAINERS or raise MAX_CONTAINERS (null: no limit)"
            )
        if maximum is not None and self.buffer_containers and self.buffer_containers >= maximum:
            raise ValueError(
                f"buffer_containers ({self.buffer_containers}) leaves no room under "
                f"max_containers ({maximum}): a buffer is kept beside at least one busy "
                f"container, so it needs MAX_CONTAINERS of at least {self.buffer_containers + 1} "
                "(null: no limit), or a smaller BUFFER_CONTAINERS"
            )
        if self.target_inputs is not None and self.target_inputs > self.max_inputs:
            raise ValueError(
                f"target_inputs ({self.target_inputs}) is larger than max_inputs "
                f"({self.max_inputs}): Modal's autoscaler cannot aim for more requests per "
                "container than one serves; lower TARGET_INPUTS or raise MAX_INPUTS"
            )
        return self

    def modal_autoscaling(self) -> dict[str, Any]:
        """Keyword arguments of ``@app.function``/``@app.cls``: the autoscaler's and the region."""
        return {
            "min_containers": self.min_containers,
            "max_containers": self.max_containers,
            "buffer_containers": self.buffer_containers or None,
            "scaledown_window": self.scaledown_window,
            "region": list(self.region) or None,
        }

    def modal_concurrency(self) -> dict[str, int | None]:
        """Keyword arguments of ``@modal.concurrent``."""
        return {"max_inputs": self.max_inputs, "target_inputs": self.target_inputs}


__all__ = [
    "MAX_SCALEDOWN_WINDOW",
    "MIN_SCALEDOWN_WINDOW",
    "REGION_NAME",
    "BufferContainers",
    "MaxContainers",
    "MaxInputs",
    "MinContainers",
    "ModalScaling",
    "Regions",
    "ScaledownWindow",
    "TargetInputs",
]
