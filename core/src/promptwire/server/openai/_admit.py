"""How the OpenAI API's routes (Completions, Chat Completions, Responses) read and admit a
request (``Conversations`` with OpenAI's errors): the model it names must be the one served, and
the app's slots must have room for its prompts."""

from __future__ import annotations

from collections.abc import Callable

from promptwire.server._conversation import Conversations
from promptwire.server._state import ServingState
from promptwire.server.openai._errors import OpenAIError
from promptwire.server.openai._translate import check_request

#: The id ``/v1/models`` lists for an engine that does not name its model.
DEFAULT_MODEL_ID = "promptwire"


def model_id(state: ServingState) -> str:
    return state.engine.model_name or DEFAULT_MODEL_ID


def served_model(state: ServingState, requested: str | None) -> str:
    """The served model's id; OpenAI's 404 when ``requested`` names another."""
    served = model_id(state)
    if requested is not None and requested != served:
        raise OpenAIError(
            404,
            f"the model {requested!r} does not exist; this server serves {served!r}",
            param="model",
            code="model_not_found",
        )
    return served


def openai_conversations(state: ServingState) -> Conversations:
    return Conversations(state, check_request, OpenAIError.from_engine)


def admit(
    routes: Conversations, requested: str | None, count: int = 1
) -> tuple[str, Callable[[], None]]:
    """The model served, once the engine is served, it is the one asked for and ``count``
    slots are free; and the function that gives those slots back."""
    state = routes.state
    if not state.serving():
        routes.take(count)  # raises the 503 ``not_ready``
    model = served_model(state, requested)
    limit = state.slots.limit
    if limit is not None and count > limit:
        raise OpenAIError(
            400,
            f"this server serves at most {limit} prompts at once; send fewer",
            param="prompt",
            code="too_many_prompts",
        )
    return model, routes.take(count)
