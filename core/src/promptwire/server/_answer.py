"""The shell every generating route runs its answer in, whatever protocol it speaks: read the
body or answer 499, take its slots, and, holding them, answer, give the slots back (a stream
gives them back when it ends) and raise an engine's error as the route's own; and a
conversation's answer (Chat Completions, Responses, Anthropic Messages), whole or streamed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import Response

from promptwire.engine import Completion, Engine, EngineError, EngineNotReady, render_request
from promptwire.protocol import PromptRequest
from promptwire.server._request_body import ClientGone, read_body, require_json, unless_gone
from promptwire.server._slots import RETRY_AFTER_SECONDS
from promptwire.server._state import ServingState
from promptwire.server._streaming import StreamForm, prepare, stream_reply

#: What a client that left before its answer is told (nobody reads it; the access log shows it).
CLIENT_GONE = 499


@dataclass(frozen=True, slots=True)
class Answer:
    """A route's answer; ``keeps_slots`` when it is a stream, which gives its slots back when it
    ends rather than when the route returns."""

    response: Response
    keeps_slots: bool = False


async def read_or_gone(read: Awaitable[bytes]) -> bytes | Response:
    """The body ``read`` gives, or the 499 to answer when the client left while sending it."""
    try:
        return await read
    except ClientGone:
        return Response(status_code=CLIENT_GONE)


async def read_json_body(request: Request, state: ServingState) -> bytes | Response:
    """The body, once it is declared JSON and within the app's size limit and deadline (their
    errors are the prompt protocol's, reshaped on other protocols' paths), or the 499 to answer
    when the client left while sending it."""
    require_json(request)
    limits = state.limits
    return await read_or_gone(read_body(request, limits.max_body_bytes, limits.body_timeout))


def take_slots(
    state: ServingState, count: int, engine_error: Callable[[EngineError], Exception]
) -> Callable[[], None]:
    """``count`` of the app's slots, once the engine is served; the function that gives them
    back. Refused (503, as the route's own error) while the engine is not served or when the
    slots are full."""
    try:
        if not state.serving():
            raise EngineNotReady(state.engine.not_ready_reason, retry_after=RETRY_AFTER_SECONDS)
        return state.slots.take(count)
    except EngineError as exc:
        raise engine_error(exc) from None


async def answer_conversation(
    state: ServingState,
    request: Request,
    conversation: PromptRequest,
    release: Callable[[], None],
    *,
    check: Callable[[Engine[Any], PromptRequest], None],
    form: StreamForm | None,
    whole: Callable[[Completion], Response],
    engine_error: Callable[[EngineError], Exception],
) -> Response:
    """Answer ``conversation`` (its ``messages``; its prompt not yet rendered) while holding
    the slots ``release`` gives back, once ``check`` (the engine's capabilities, said as the
    route's error) has passed: streamed as ``form`` writes it, or whole as ``whole`` writes
    the completion."""
    engine, shutdown = state.engine, state.shutdown

    async def answer() -> Answer:
        check(engine, conversation)
        # As on the prompt route: the rendering in ``prompt``, the conversation kept in
        # ``messages`` (an engine may tokenize a template's rendering differently).
        job = await state.preparer.run(
            lambda: prepare(
                engine,
                conversation.model_copy(update={"prompt": render_request(engine, conversation)}),
            )
        )
        if form is not None:
            return Answer(
                await stream_reply(
                    engine,
                    job,
                    request.receive,
                    release,
                    shutdown,
                    state.limits.send_timeout,
                    form,
                ),
                keeps_slots=True,
            )
        done = await unless_gone(
            engine.complete(job.request, job.prepared), request.receive, shutdown
        )
        return Answer(whole(done))

    return await answer_in_slots(release, answer, engine_error)


async def answer_in_slots(
    release: Callable[[], None],
    answer: Callable[[], Awaitable[Answer]],
    engine_error: Callable[[EngineError], Exception],
) -> Response:
    """Run ``answer`` while holding the slots ``release`` gives back.

    A client gone is a 499, an engine's error is raised as the route's own (``engine_error``),
    and the slots are given back here unless a stream took them over.
    """
    keeps_slots = False
    try:
        reply = await answer()
        keeps_slots = reply.keeps_slots
        return reply.response
    except ClientGone:
        return Response(status_code=CLIENT_GONE)
    except EngineError as exc:
        raise engine_error(exc) from None
    finally:
        if not keeps_slots:
            release()
