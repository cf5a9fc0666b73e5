"""How the conversation routes of the protocols other than the prompt route's (OpenAI Chat
Completions and Responses, Anthropic Messages) answer: read the body, take a slot, check the
engine's capabilities, render and prepare the conversation (``Preparer.job``), and answer whole
or streamed (or count its tokens), each protocol saying its errors (``RouteError``) in its own
shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.engine import (
    Completion,
    Engine,
    EngineError,
    EngineNotReady,
    rendered_request,
)
from promptwire.protocol import PromptRequest
from promptwire.server._answer import CLIENT_GONE, Answer, answer_in_slots
from promptwire.server._errors import RouteError
from promptwire.server._request_body import ClientGone, read_body, require_json, unless_gone
from promptwire.server._slots import RETRY_AFTER_SECONDS
from promptwire.server._state import ServingState
from promptwire.server._streaming import StreamForm, stream_reply


async def _on_route_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RouteError)
    return exc.response()


async def _on_client_gone(_: Request, exc: Exception) -> Response:
    return Response(status_code=CLIENT_GONE)


def answer_route_errors(app: FastAPI) -> None:
    """A ``RouteError`` answered by its ``response``; a client gone while sending its body
    told 499 (each protocol's module calls it; once is enough)."""
    app.add_exception_handler(RouteError, _on_route_error)
    app.add_exception_handler(ClientGone, _on_client_gone)


@dataclass(frozen=True)
class Conversations:
    """One protocol's way of answering conversations from the app's ``state``: ``check`` says
    the engine's capabilities' refusals, ``engine_error`` the engine's errors, as the protocol's
    own errors."""

    state: ServingState
    check: Callable[[Engine[Any], PromptRequest], None]
    engine_error: Callable[[EngineError], Exception]

    async def body(self, request: Request) -> bytes:
        """The body, once it is declared JSON and within the app's size limit and deadline
        (their errors are ``RequestError``s, in the shape of the protocol whose path it is);
        ``ClientGone`` (499) when the client leaves while sending it."""
        require_json(request)
        limits = self.state.limits
        return await read_body(request, limits.max_body_bytes, limits.body_timeout)

    def take(self, count: int = 1) -> Callable[[], None]:
        """``count`` of the app's slots, once the engine is served; the function that gives
        them back. Refused (503) while the engine is not served or when the slots are full."""
        state = self.state
        try:
            if not state.serving():
                raise EngineNotReady(state.engine.not_ready_reason, retry_after=RETRY_AFTER_SECONDS)
            return state.slots.take(count)
        except EngineError as exc:
            raise self.engine_error(exc) from None

    async def count_tokens(self, conversation: PromptRequest) -> int:
        """The prompt tokens ``conversation`` takes once the engine's template renders it,
        counted by the engine (its tokenizer), in the preparer's threads: nothing generated,
        no slot taken. Refused (503) while the engine is not served."""
        state = self.state
        engine = state.engine
        try:
            if not state.serving():
                raise EngineNotReady(engine.not_ready_reason, retry_after=RETRY_AFTER_SECONDS)
            self.check(engine, conversation)
            return await state.preparer.run(
                lambda: engine.count_prompt_tokens(rendered_request(engine, conversation))
            )
        except EngineError as exc:
            raise self.engine_error(exc) from None

    async def answer(
        self,
        request: Request,
        conversation: PromptRequest,
        release: Callable[[], None],
        reply: StreamForm | Callable[[Completion], Response],
    ) -> Response:
        """Answer ``conversation`` (its prompt not yet rendered) holding the slots ``release``
        gives back: streamed as a ``StreamForm`` writes it, or whole as ``reply`` writes the
        completion."""
        state = self.state
        engine, shutdown = state.engine, state.shutdown

        async def answer() -> Answer:
            self.check(engine, conversation)
            job = await state.preparer.job(engine, conversation)
            if isinstance(reply, StreamForm):
                send_timeout = state.limits.send_timeout
                stream = stream_reply(
                    engine, job, request.receive, release, shutdown, send_timeout, reply
                )
                return Answer(await stream, keeps_slots=True)
            completion = engine.complete(job.request, job.prepared)
            return Answer(reply(await unless_gone(completion, request.receive, shutdown)))

        return await answer_in_slots(release, answer, self.engine_error)
