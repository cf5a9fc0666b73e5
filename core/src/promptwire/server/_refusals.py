"""The request models of the protocols besides the prompt protocol's: each knows keys it cannot
honour (``logprobs``, ``previous_response_id``, ``thinking``, ...) and refuses them with a 400
naming the key, never ignoring them; a request that sets none of them, as nearly all do, is not
looked at further. Their generation parameters are read the same way: only those set."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel


class RefusingRequest(BaseModel):
    """A request model that says which of its parameters asks for what cannot be served."""

    #: The keys ``refused`` looks at: a request that sets none of them is served.
    REFUSABLE: ClassVar[frozenset[str]] = frozenset()

    def unsupported(self) -> tuple[str, str] | None:
        """The first parameter asking for what the engines cannot do, and why; None if none."""
        if self.model_fields_set.isdisjoint(self.REFUSABLE):
            return None
        return self.refused()

    def refused(self) -> tuple[str, str] | None:
        """As ``unsupported``, for a request that sets one of ``REFUSABLE`` at least."""
        return None

    def set_values(self, names: frozenset[str]) -> dict[str, Any]:
        """The values of the fields of ``names`` this request sets, None left out. Declared
        fields only: an unknown key of the same name, kept as an extra, is never read as one."""
        declared = type(self).model_fields
        return {
            name: value
            for name in names & self.model_fields_set
            if name in declared and (value := getattr(self, name)) is not None
        }
