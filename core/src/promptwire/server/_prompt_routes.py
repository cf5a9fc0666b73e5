"""The prompt endpoint protocol's routes: ``POST /`` (a whole reply, or server-sent events with
``"stream": true``) and ``GET /health``, served from the app's ``ServingState``.

A v1.1 request's ``messages`` are rendered by the engine's chat template and served in place of
its ``prompt``; a v1.2 request's tools and response format are refused (422) unless the engine
declares them. Routes are the app's own (an included router would cost about 15 us a request).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.engine import (
    EngineNotReady,
    EngineOverloaded,
    check_capabilities,
)
from promptwire.protocol import (
    ErrorBody,
    ErrorType,
    Health,
    PromptResponse,
)
from promptwire.server._answer import Answer, answer_in_slots, read_or_gone
from promptwire.server._errors import RequestError, error_response
from promptwire.server._guard import HEALTH_PATH
from promptwire.server._request_body import (
    parse_request,
    read_body,
    request_body_schema,
    require_json,
)
from promptwire.server._slots import RETRY_AFTER_SECONDS
from promptwire.server._state import ServingState
from promptwire.server._streaming import stream_reply, whole_reply


def add_prompt_routes(app: FastAPI, state: ServingState) -> None:
    """Serve the prompt protocol on ``app`` from ``state``."""
    engine, serving, slots = state.engine, state.serving, state.slots
    shutdown, preparer = state.shutdown, state.preparer
    max_body_bytes = state.limits.max_body_bytes
    body_timeout, send_timeout = state.limits.body_timeout, state.limits.send_timeout

    @app.get(
        HEALTH_PATH,
        response_model=Health,
        responses={503: {"model": ErrorBody, "description": "Not ready yet"}},
    )
    async def health() -> Response:
        if not serving():
            return error_response(
                503, ErrorType.NOT_READY, engine.not_ready_reason, RETRY_AFTER_SECONDS
            )
        health = Health(model=engine.model_name, capabilities=engine.capabilities)
        return Response(health.model_dump_json(), media_type="application/json")

    @app.post(
        "/",
        response_model=PromptResponse,
        responses={
            200: {"content": {"text/event-stream": {}}},
            401: {"model": ErrorBody},
            408: {"model": ErrorBody},
            413: {"model": ErrorBody},
            415: {"model": ErrorBody},
            422: {"model": ErrorBody},
            500: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_body_schema()}},
            }
        },
    )
    async def generate(request: Request) -> Response:
        require_json(request)
        body = await read_or_gone(read_body(request, max_body_bytes, body_timeout))
        if isinstance(body, Response):
            return body
        prompt_request = parse_request(body)
        if not serving():
            raise RequestError.from_engine(
                EngineNotReady(engine.not_ready_reason, retry_after=RETRY_AFTER_SECONDS)
            )
        try:
            release = slots.take()
        except EngineOverloaded as exc:
            raise RequestError.from_engine(exc) from None

        async def answer() -> Answer:
            check_capabilities(engine, prompt_request)
            job = await preparer.job(engine, prompt_request)
            if prompt_request.stream:
                return Answer(
                    await stream_reply(
                        engine, job, request.receive, release, shutdown, send_timeout
                    ),
                    keeps_slots=True,
                )
            return Answer(await whole_reply(engine, job, request.receive, shutdown))

        return await answer_in_slots(release, answer, RequestError.from_engine)
