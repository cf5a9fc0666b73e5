"""The OpenAI API on every promptwire app: ``GET /v1/models``, ``POST /v1/completions`` and
``POST /v1/chat/completions``, served by the same engine as the prompt route.

The routes go through what the prompt route goes through: the app's request guard, auth and
error handling, the JSON content type, strict JSON, the body limit and deadline, the shared count
of requests in flight (``RequestSlots``), the engine's chat template (``render_chat``), its
``check`` and its generation under the request's limits (``Engine.generate``); a client that
disconnects cancels its generation, a stream's client that reads nothing is cut off, and on
shutdown running requests get the same grace period. Only the wire differs: OpenAI's request
keys, replies, ``data:`` chunks ending with ``data: [DONE]``, and errors shaped ``{"error":
{"message", "type", "param", "code"}}`` with the status codes OpenAI's SDK maps to its
exceptions. Errors that other layers of the app answer
on these paths (401 from auth, 404 for an unknown path, 500) are reshaped by ``OpenAIErrorShape``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.engine import (
    EngineError,
    render_request,
)
from promptwire.server._answer import Answer, answer_in_slots, read_or_gone
from promptwire.server._request_body import (
    read_body,
    require_json,
)
from promptwire.server._slots import RETRY_AFTER_SECONDS
from promptwire.server._state import ServingState
from promptwire.server._streaming import prepare, stream_reply
from promptwire.server.openai._errors import OpenAIError
from promptwire.server.openai._reply import Chunks, Writer, reply_json
from promptwire.server.openai._reshape import PREFIX, OpenAIErrorShape
from promptwire.server.openai._translate import (
    chat_messages,
    chat_request,
    check_request,
    complete_jobs,
    parse_request,
    prompt_job,
)
from promptwire.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
)

#: The id ``/v1/models`` lists for an engine that does not name its model.
DEFAULT_MODEL_ID = "promptwire"
OWNED_BY = "promptwire"


def add_openai_routes(app: FastAPI, state: ServingState) -> None:
    """Serve the OpenAI API on ``app`` from ``state``: the engine (while it is served), the
    shared slots, the limits and the shutdown of the app's other routes (``create_app`` calls
    this)."""
    engine, serving, slots = state.engine, state.serving, state.slots
    shutdown, preparer = state.shutdown, state.preparer
    max_body_bytes = state.limits.max_body_bytes
    body_timeout, send_timeout = state.limits.body_timeout, state.limits.send_timeout
    started = int(time.time())
    # Routes of the app itself: an included APIRouter would be matched as a nested router, which
    # costs FastAPI about 15 us more per request (a tenth of a whole reply's app time).

    def model_id() -> str:
        return engine.model_name or DEFAULT_MODEL_ID

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": OWNED_BY}

    def served_model(requested: str | None) -> str:
        served = model_id()
        if requested is not None and requested != served:
            raise OpenAIError(
                404,
                f"the model {requested!r} does not exist; this server serves {served!r}",
                param="model",
                code="model_not_found",
            )
        return served

    def admit(requested: str | None, count: int) -> tuple[str, Callable[[], None]]:
        """The model served, once the engine is ready, it is the one asked for and ``count``
        slots are free; and the function that gives those slots back."""
        if not serving():
            raise OpenAIError(
                503, engine.not_ready_reason, code="not_ready", retry_after=RETRY_AFTER_SECONDS
            )
        model = served_model(requested)
        if slots.limit is not None and count > slots.limit:
            raise OpenAIError(
                400,
                f"this server serves at most {slots.limit} prompts at once; send fewer",
                param="prompt",
                code="too_many_prompts",
            )
        try:
            return model, slots.take(count)
        except EngineError as exc:
            raise OpenAIError.from_engine(exc) from None

    @app.get(PREFIX + "/models", include_in_schema=False)
    async def list_models() -> Response:
        return reply_json({"object": "list", "data": [model_card(model_id())]})

    @app.get(PREFIX + "/models/{name:path}", include_in_schema=False)
    async def retrieve_model(name: str) -> Response:
        return reply_json(model_card(served_model(name)))

    async def read(request: Request) -> bytes:
        """The body, once it is declared JSON and within the size limit and deadline (their
        errors, in the prompt protocol's shape, are reshaped by ``OpenAIErrorShape``)."""
        require_json(request)
        return await read_body(request, max_body_bytes, body_timeout)

    @app.post(PREFIX + "/completions", include_in_schema=False)
    async def completions(request: Request) -> Response:
        raw = await read_or_gone(read(request))
        if isinstance(raw, Response):
            return raw
        body = parse_request(CompletionRequest, raw)
        params = body.generation_params()
        prompts = body.prompts()
        model, release = admit(body.model, len(prompts))

        async def answer() -> Answer:
            if engine.prepares_quickly:  # plain prompts, prepared at once: no thread's round trip
                jobs = [prompt_job(engine, prompt, params) for prompt in prompts]
            else:
                jobs = await preparer.run(
                    lambda: [prompt_job(engine, prompt, params) for prompt in prompts]
                )
            writer = Writer("cmpl", "text_completion", model)
            echo = prompts if body.echo else None
            if body.stream:
                form = Chunks(writer, body.include_usage(), echo)
                return Answer(
                    await stream_reply(
                        engine, jobs[0], request.receive, release, shutdown, send_timeout, form
                    ),
                    keeps_slots=True,
                )
            done = await complete_jobs(engine, jobs, request.receive, shutdown)
            return Answer(reply_json(writer.completion(done, echo)))

        return await answer_in_slots(release, answer, OpenAIError.from_engine)

    @app.post(PREFIX + "/chat/completions", include_in_schema=False)
    async def chat_completions(request: Request) -> Response:
        raw = await read_or_gone(read(request))
        if isinstance(raw, Response):
            return raw
        body = parse_request(ChatCompletionRequest, raw)
        conversation = chat_request(body, chat_messages(body.messages))
        model, release = admit(body.model, 1)

        async def answer() -> Answer:
            check_request(engine, conversation)
            # As on the prompt route: the rendering in ``prompt``, the conversation kept in
            # ``messages`` (an engine may tokenize a template's rendering differently).
            job = await preparer.run(
                lambda: prepare(
                    engine,
                    conversation.model_copy(
                        update={"prompt": render_request(engine, conversation)}
                    ),
                )
            )
            writer = Writer("chatcmpl", "chat.completion", model)
            if body.stream:
                form = Chunks(writer, body.include_usage(), None)
                return Answer(
                    await stream_reply(
                        engine, job, request.receive, release, shutdown, send_timeout, form
                    ),
                    keeps_slots=True,
                )
            done = await complete_jobs(engine, [job], request.receive, shutdown)
            return Answer(reply_json(writer.chat_completion(done[0])))

        return await answer_in_slots(release, answer, OpenAIError.from_engine)

    async def on_openai_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        return exc.response()

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_middleware(OpenAIErrorShape)
