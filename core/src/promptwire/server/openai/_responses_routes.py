"""OpenAI's Responses API on every promptwire app: ``POST /v1/responses``, stateless, served by
the same engine as the prompt route.

It goes through what ``/v1/chat/completions`` goes through (the app's guard, auth, body limit
and deadline, the shared slots, the schema budget, the engine's chat template, capabilities and
generation, disconnect cancellation, metrics and request ids), with the Responses API's wire:
``input`` items and ``instructions`` in, ``response`` objects and ``response.*`` events out,
errors in OpenAI's shape. Nothing is stored: ``previous_response_id`` and ``conversation`` are
refused with a 400 that says to send the whole conversation, and ``GET /v1/responses/{id}``
finds nothing (404). ``POST /v1/responses/input_tokens`` counts a request's input with the
engine's template and tokenizer, as it would be answered.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.server._state import ServingState
from promptwire.server.openai._admit import admit, openai_conversations, served_model
from promptwire.server.openai._errors import PREFIX, answer_openai_errors
from promptwire.server.openai._reply import reply_json
from promptwire.server.openai._responses_reply import ResponseEvents, ResponseWriter
from promptwire.server.openai._responses_translate import responses_request
from promptwire.server.openai._translate import parse_request
from promptwire.server.openai.protocol import ResponsesRequest


def add_responses_routes(app: FastAPI, state: ServingState) -> None:
    """Serve ``POST /v1/responses`` on ``app`` from ``state`` (``create_app`` calls this)."""
    answer_openai_errors(app)
    routes = openai_conversations(state)

    @app.post(PREFIX + "/responses", include_in_schema=False)
    async def responses(request: Request) -> Response:
        body = parse_request(ResponsesRequest, await routes.body(request))
        conversation = responses_request(body)
        model, release = admit(routes, body.model)
        writer = ResponseWriter(body, model)
        if body.stream:
            return await routes.answer(request, conversation, release, ResponseEvents(writer))
        whole = writer.whole
        return await routes.answer(request, conversation, release, lambda c: reply_json(whole(c)))

    @app.post(PREFIX + "/responses/input_tokens", include_in_schema=False)
    async def input_tokens(request: Request) -> Response:
        body = parse_request(ResponsesRequest, await routes.body(request))
        served_model(state, body.model)  # another model is a 404, as on /v1/responses
        tokens = await routes.count_tokens(responses_request(body))
        return reply_json({"object": "response.input_tokens", "input_tokens": tokens})
