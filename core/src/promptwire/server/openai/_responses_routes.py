"""OpenAI's Responses API on every promptwire app: ``POST /v1/responses``, stateless, served by
the same engine as the prompt route.

It goes through what ``/v1/chat/completions`` goes through (the app's guard, auth, body limit
and deadline, the shared slots, the schema budget, the engine's chat template, capabilities and
generation, disconnect cancellation, metrics and request ids), with the Responses API's wire:
``input`` items and ``instructions`` in, ``response`` objects and ``response.*`` events out,
errors in OpenAI's shape. Nothing is stored: ``previous_response_id`` and ``conversation`` are
refused with a 400 that says to send the whole conversation, and ``GET /v1/responses/{id}``
finds nothing (404).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.server._answer import answer_conversation, read_json_body
from promptwire.server._state import ServingState
from promptwire.server.openai._admit import admit
from promptwire.server.openai._errors import PREFIX, OpenAIError, answer_openai_errors
from promptwire.server.openai._reply import reply_json
from promptwire.server.openai._responses_reply import ResponseEvents, ResponseWriter
from promptwire.server.openai._responses_translate import responses_request
from promptwire.server.openai._translate import check_request, parse_request
from promptwire.server.openai.protocol import ResponsesRequest


def add_responses_routes(app: FastAPI, state: ServingState) -> None:
    """Serve ``POST /v1/responses`` on ``app`` from ``state`` (``create_app`` calls this)."""
    answer_openai_errors(app)

    @app.post(PREFIX + "/responses", include_in_schema=False)
    async def responses(request: Request) -> Response:
        raw = await read_json_body(request, state)
        if isinstance(raw, Response):
            return raw
        body = parse_request(ResponsesRequest, raw)
        conversation = responses_request(body)
        model, release = admit(state, body.model)
        writer = ResponseWriter(body, model)
        return await answer_conversation(
            state,
            request,
            conversation,
            release,
            check=check_request,
            form=ResponseEvents(writer) if body.stream else None,
            whole=lambda done: reply_json(writer.whole(done)),
            engine_error=OpenAIError.from_engine,
        )
