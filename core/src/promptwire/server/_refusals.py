"""The request models of the protocols besides the prompt protocol's: each knows keys it cannot
honour (``logprobs``, ``previous_response_id``, ``thinking``, ...) and refuses them with a 400
naming the key, never ignoring them; a request that sets none of them, as nearly all do, is not
looked at further. Their generation parameters are read the same way: only those set."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel


class RefusingRequest(BaseModel):
    """A request model that says which of its parameters asks for what cannot be served, and
    reads the generation parameters it passes on as they are."""

    #: The keys ``refused`` looks at: a request that sets none of them is served.
    REFUSABLE: ClassVar[frozenset[str]] = frozenset()
    #: The fields passed on under their own names (``set_parameters``): declared fields only,
    #: checked when the class is made, so an unknown key of the same name (kept as an extra)
    #: is never read as one.
    PARAMETERS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for kind, names in (("REFUSABLE", cls.REFUSABLE), ("PARAMETERS", cls.PARAMETERS)):
            if undeclared := names - cls.model_fields.keys():
                raise TypeError(f"{cls.__name__}.{kind} names undeclared fields: {undeclared}")

    def unsupported(self) -> tuple[str, str] | None:
        """The first parameter asking for what the engines cannot do, and why; None if none."""
        if self.model_fields_set.isdisjoint(self.REFUSABLE):
            return None
        return self.refused()

    def refused(self) -> tuple[str, str] | None:
        """As ``unsupported``, for a request that sets one of ``REFUSABLE`` at least."""
        return None

    def set_parameters(self) -> dict[str, Any]:
        """The values of the ``PARAMETERS`` this request sets, None left out."""
        return {
            name: value
            for name in self.PARAMETERS & self.model_fields_set
            if (value := getattr(self, name)) is not None
        }
