"""Anthropic's Messages API on every promptwire app: ``POST /v1/messages``, served by the same
engine as the prompt route, and ``POST /v1/messages/count_tokens``, counted by its tokenizer.

It goes through what the other conversation routes go through (the app's guard, auth (a key in
``x-api-key`` as well as a bearer token), body limit and deadline, the shared slots, the schema
budget, the engine's chat template, capabilities and generation, disconnect cancellation,
metrics and request ids), with Anthropic's wire: its request, ``message`` replies, its stream
events, and errors shaped ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.responses import Response

from promptwire.engine import Engine, RequestUnsupported, check_capabilities
from promptwire.protocol import PromptRequest
from promptwire.server._conversation import Conversations
from promptwire.server._request_body import json_object, validation_problems
from promptwire.server._state import ServingState
from promptwire.server.anthropic._errors import (
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    AnthropicError,
    answer_anthropic_errors,
)
from promptwire.server.anthropic._reply import MessageEvents, message, message_id
from promptwire.server.anthropic._translate import messages_request
from promptwire.server.anthropic.protocol import CountTokensRequest, MessagesRequest
from promptwire.server.openai._admit import model_id
from promptwire.server.openai._reply import reply_json


def add_anthropic_routes(app: FastAPI, state: ServingState) -> None:
    """Serve ``POST /v1/messages`` on ``app`` from ``state`` (``create_app`` calls this)."""
    answer_anthropic_errors(app)
    routes = Conversations(state, check_request, AnthropicError.from_engine)

    @app.post(MESSAGES_PATH, include_in_schema=False)
    async def messages(request: Request) -> Response:
        body = parse_request(await routes.body(request))
        conversation = messages_request(body)
        release = routes.take()
        model, identifier = model_id(state), message_id()
        if body.stream:
            form = MessageEvents(model, identifier)
            return await routes.answer(request, conversation, release, form)
        reply = partial(message, model=model, identifier=identifier)
        return await routes.answer(request, conversation, release, lambda c: reply_json(reply(c)))

    @app.post(COUNT_TOKENS_PATH, include_in_schema=False)
    async def count_tokens(request: Request) -> Response:
        body = parse_request(await routes.body(request), CountTokensRequest)
        tokens = await routes.count_tokens(messages_request(body))
        return reply_json({"input_tokens": tokens})


def parse_request(body: bytes, kind: type[MessagesRequest] = MessagesRequest) -> MessagesRequest:
    """``body`` as a Messages request (or ``kind``), strictly: Anthropic's 400s for what is not
    JSON, not an object, not the request, or asks for what the engines cannot do."""
    try:
        parsed = kind.model_validate(json_object(body))
    except ValueError as exc:  # a ValidationError is one too
        said = validation_problems(exc)[1] if isinstance(exc, ValidationError) else str(exc)
        raise AnthropicError(400, said) from None
    if (found := parsed.unsupported()) is not None:
        raise AnthropicError(400, f"{found[0]}: {found[1]}")
    return parsed


def check_request(engine: Engine[Any], request: PromptRequest) -> None:
    """As on the prompt route, but answered as Anthropic answers what it cannot honour."""
    try:
        check_capabilities(engine, request)
    except RequestUnsupported as exc:
        raise AnthropicError(400, exc.message, code=str(exc.error_type)) from None
