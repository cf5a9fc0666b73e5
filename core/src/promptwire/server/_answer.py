"""The shell every generating route runs its answer in, whatever protocol it speaks: read the
body or answer 499, and, holding its slots, answer, give the slots back (a stream gives them back
when it ends) and raise an engine's error as the route's own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response

from promptwire.engine import EngineError
from promptwire.server._request_body import ClientGone

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
