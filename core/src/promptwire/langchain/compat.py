"""``Modal``: a drop-in for ``langchain_community.llms.Modal``.

Same constructor (``endpoint_url``, ``model_kwargs``, unknown keyword arguments moved into
``model_kwargs``), so code written for LangChain's Modal guide runs with only its import changed,
and gains everything ``PromptwireLLM`` does: timeouts, retries, auth, streaming, async, batching.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import model_validator

from promptwire.langchain.llm import PromptwireLLM

logger = logging.getLogger(__name__)


class Modal(PromptwireLLM):
    """A Modal web endpoint that speaks the ``{"prompt": ...}`` protocol."""

    @model_validator(mode="before")
    @classmethod
    def _move_extra_to_model_kwargs(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        extra = dict(values.get("model_kwargs") or {})
        for name in list(values):
            if name not in cls.model_fields:
                if name in extra:
                    raise ValueError(f"Found {name} supplied twice.")
                logger.warning("%s was transferred to model_kwargs.", name)
                extra[name] = values.pop(name)
        values["model_kwargs"] = extra
        return values

    @property
    def _llm_type(self) -> str:
        return "modal"

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """Where LangChain's ``load`` finds the class: the package itself, whose names stay put
        wherever the module that defines them moves."""
        return ["promptwire"]


__all__ = [
    "Modal",
]
