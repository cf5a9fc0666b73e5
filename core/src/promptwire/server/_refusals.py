"""The request models of the protocols besides the prompt protocol's: each knows keys it cannot
honour (``logprobs``, ``previous_response_id``, ``thinking``, ...) and refuses them with a 400
naming the key, never ignoring them; a request that sets none of them, as nearly all do, is not
looked at further."""

from __future__ import annotations

from typing import ClassVar

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
