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
exceptions. Errors that the app's shared layers answer on these paths (401 from auth, 404 for
an unknown path, 500) are written in OpenAI's shape too (``promptwire.server._error_shape``).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.server._answer import Answer, answer_in_slots
from promptwire.server._state import ServingState
from promptwire.server._streaming import stream_reply
from promptwire.server.openai._admit import admit, model_id, openai_conversations, served_model
from promptwire.server.openai._errors import PREFIX, OpenAIError, answer_openai_errors
from promptwire.server.openai._reply import Chunks, Writer, reply_json
from promptwire.server.openai._translate import (
    chat_request,
    complete_jobs,
    parse_request,
    prompt_job,
)
from promptwire.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
)

OWNED_BY = "promptwire"


def add_openai_routes(app: FastAPI, state: ServingState) -> None:
    """Serve the OpenAI API on ``app`` from ``state``: the engine (while it is served), the
    shared slots, the limits and the shutdown of the app's other routes (``create_app`` calls
    this)."""
    engine, shutdown, preparer = state.engine, state.shutdown, state.preparer
    send_timeout = state.limits.send_timeout
    routes = openai_conversations(state)
    started = int(time.time())
    # Routes of the app itself: an included APIRouter would be matched as a nested router, which
    # costs FastAPI about 15 us more per request (a tenth of a whole reply's app time).

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": OWNED_BY}

    @app.get(PREFIX + "/models", include_in_schema=False)
    async def list_models() -> Response:
        return reply_json({"object": "list", "data": [model_card(model_id(state))]})

    @app.get(PREFIX + "/models/{name:path}", include_in_schema=False)
    async def retrieve_model(name: str) -> Response:
        return reply_json(model_card(served_model(state, name)))

    @app.post(PREFIX + "/completions", include_in_schema=False)
    async def completions(request: Request) -> Response:
        body = parse_request(CompletionRequest, await routes.body(request))
        params = body.generation_params()
        prompts = body.prompts()
        model, release = admit(routes, body.model, len(prompts))

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
        body = parse_request(ChatCompletionRequest, await routes.body(request))
        conversation = chat_request(body)
        model, release = admit(routes, body.model)
        writer = Writer("chatcmpl", "chat.completion", model)
        if body.stream:
            return await routes.answer(
                request, conversation, release, Chunks(writer, body.include_usage(), None)
            )
        whole = writer.chat_completion
        return await routes.answer(request, conversation, release, lambda c: reply_json(whole(c)))

    answer_openai_errors(app)
