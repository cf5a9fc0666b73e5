"""Reading a request: the body within its deadline and size limit, strict JSON (no NaN, bounded
integers), the protocol's request model, and racing work against the client leaving."""

from __future__ import annotations

import asyncio
import codecs
import json
import math
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
)
from dataclasses import dataclass
from itertools import islice
from typing import Any, NoReturn, TypeVar

from fastapi import Request
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from promptwire.protocol import (
    NOT_UNICODE,
    PromptRequest,
)
from promptwire.protocol._unicode_text import lone_surrogate
from promptwire.server._deadline import Deadline
from promptwire.server._errors import RequestError
from promptwire.server._shutdown import (
    GracefulShutdown,
    shutting_down,
)

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer; nobody is left to answer."""


async def unless_gone(
    work: Awaitable[T], receive: Callable[[], Awaitable[Any]], shutdown: GracefulShutdown
) -> T:
    """Await ``work`` while watching the client and the shutdown: if the client leaves
    (``ClientGone``) or the grace period ends (503) first, ``work`` is cancelled, which frees
    the engine and the request's slot at once.

    ``work`` runs in this task, and what stops it cancels this task while it waits there. The
    watcher (a task reading ``receive`` until the client disconnects) is started only once
    ``work`` has to wait, one turn of the loop later: work that is done without waiting (an
    instant engine's whole reply) costs no task, no ``asyncio.wait``.
    """
    if shutdown.expired:
        if asyncio.iscoroutine(work):
            work.close()
        elif asyncio.isfuture(work):
            work.cancel()
        raise shutting_down()
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopped_by: str | None = None  # "client" or "shutdown", once one has cancelled the task
    watcher: asyncio.Task[None] | None = None

    def stop(by: str) -> None:
        nonlocal stopped_by
        if stopped_by is None:
            stopped_by = by
            task.cancel()

    def on_expiry() -> None:
        stop("shutdown")

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        stop("client")

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    # Both only ever run while this task waits in ``work`` (never while it runs), so the
    # cancellation they ask for lands there and nowhere else.
    handle = loop.call_soon(start_watching)
    shutdown.call_on_expiry(on_expiry)
    try:
        result = await work
    except asyncio.CancelledError:
        if stopped_by is None or task.uncancel() > 0:
            raise  # cancelled for another reason too
        if stopped_by == "shutdown":
            raise shutting_down() from None
        raise ClientGone from None
    else:
        if stopped_by is not None:  # ``work`` swallowed the cancellation and finished: take it
            task.uncancel()  # back (the answer is served, as when it finishes first)
        return result
    finally:
        handle.cancel()
        shutdown.forget(on_expiry)
        if watcher is not None:
            watcher.cancel()


async def read_body(request: Request, limit: int, seconds: float | None) -> bytes:
    """The request's body, refused (413) past ``limit`` bytes, declared or sent, and (408,
    closing the connection) when it has not all come within ``seconds``; ``ClientGone`` when
    the client leaves first. Read from ``receive`` as Starlette's ``Request.stream`` reads it,
    and left on the request as ``Request.body()`` would leave it."""
    for name, value in request.scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestError(413, f"the body is larger than the limit of {limit} bytes")
    # Set only once the body has to be waited for: one that came with its request, as most
    # do, costs no timer at all.
    deadline = None if seconds is None else Deadline(seconds)
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            if message["type"] != "http.request":
                continue
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if deadline is None or not deadline.caught():
            raise  # cancelled for another reason too
        raise RequestError(
            408, f"the body did not arrive within {seconds:g} s", close=True
        ) from None
    finally:
        if deadline is not None:
            deadline.cancel()
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # what Request.body() returns from now on
    return body


def require_json(request: Request) -> None:
    """The body must be declared JSON. A browser sends a cross-site request without asking the
    server first only for a few "simple" content types (text/plain among them); requiring
    ``application/json`` makes it ask (a CORS preflight), and this server never says yes."""
    declared: list[bytes] = []
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            declared.append(value)
        elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            # Read as it came, a compressed body was "not valid JSON": say what is wrong.
            encoding = value.decode("latin-1")[:40]
            raise RequestError(
                415, f"Content-Encoding {encoding!r} is not supported: send the body uncompressed"
            )
    media_type = (
        declared[0].decode("latin-1").partition(";")[0].strip().lower()
        if len(declared) == 1
        else ""
    )
    if media_type != "application/json":
        raise RequestError(415, "the body must be JSON, sent with Content-Type: application/json")


# Where the request body's schema sits in the OpenAPI document. Its nested models stay in its own
# ``$defs``; pydantic's default refs (``#/$defs/ChatMessage``) would point at the document's root,
# where there is nothing, and tools that read the schema (schemathesis, client generators) fail.
_REQUEST_SCHEMA_POINTER = "#/paths/~1/post/requestBody/content/application~1json/schema"


def request_body_schema() -> dict[str, Any]:
    return PromptRequest.model_json_schema(ref_template=_REQUEST_SCHEMA_POINTER + "/$defs/{model}")


# Python converts at most 4,300 digits to an int (a guard against quadratic time; the limit can
# be lowered to 640, never below). No integer the protocol accepts has more than 19 digits, and an
# unknown key's value is ignored, so a longer one is read as an infinity, which every known key
# refuses: the request is then accepted or refused as the protocol says, not for its length.
_MAX_INT_DIGITS = 640


def _parse_int(digits: str) -> int | float:
    if len(digits) <= _MAX_INT_DIGITS:
        return int(digits)
    return -math.inf if digits.startswith("-") else math.inf


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")  # NaN, Infinity, -Infinity: Python's extensions


DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_not_json)


class UnservableJSON(ValueError):
    """The body is JSON, but holds a value that no reply (nor log line) could write back as
    JSON; the message says which."""


class NotUnicodeError(UnservableJSON):
    """A string in the body is not Unicode text: a ``"\\ud800"`` escape."""


def _finite_int(digits: str) -> int:
    if len(digits) <= _MAX_INT_DIGITS:
        return int(digits)
    count = len(digits.removeprefix("-"))
    raise UnservableJSON(
        f"the body holds an integer of {count} digits; at most {_MAX_INT_DIGITS} are read"
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # JSON has no infinity: a reply echoing it would not be JSON
        raise UnservableJSON(f"the body holds a number beyond a double's range: {text[:40]}")
    return value


_ECHO_DECODER = json.JSONDecoder(
    parse_int=_finite_int, parse_float=_finite_float, parse_constant=_not_json
)


def decode_json(body: bytes, decoder: json.JSONDecoder = DECODER) -> Any:
    """The body's JSON value; ``ValueError`` (or ``RecursionError``) when it is not JSON."""
    # JSON is UTF-8 (RFC 8259 8.1); a BOM may be ignored (as "utf-8-sig" would, but its
    # codec is Python code: this is the C decoder's fast path).
    text = (body[3:] if body.startswith(codecs.BOM_UTF8) else body).decode()
    return decoder.decode(text)


def decode_unicode_json(body: bytes) -> Any:
    """As ``decode_json``, and ``UnservableJSON`` for what a reply could not echo: a string,
    key or value, holding a lone surrogate (``NotUnicodeError``), a number beyond a double's
    range or an integer too long to read. For the /v1 routes, whose replies echo fields of the
    request (the prompt route ignores the keys it does not know and checks those it does)."""
    data = decode_json(body, _ECHO_DECODER)
    # Strict UTF-8 bytes cannot hold a surrogate: only a \uD800-\uDFFF escape makes one.
    if (b"\\ud" in body or b"\\uD" in body) and (found := lone_surrogate(data)) is not None:
        raise NotUnicodeError(f"the body is not valid Unicode text: {found.described()}")
    return data


def json_object(body: bytes) -> dict[str, Any]:
    """The body's JSON object; a ``ValueError`` saying what the body is instead."""
    try:
        data = decode_unicode_json(body)
    except UnservableJSON:
        raise
    except (ValueError, RecursionError):
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


#: A place in the prompt protocol's request, as pydantic names it (``tools.0.function.name``).
Loc = tuple[str | int, ...]


def _as_is(loc: Loc) -> Loc:
    return loc


_FORMAT_TAGS = frozenset({"text", "json_object", "json_schema"})


def flat_place(loc: Loc, format_at: Loc, parameters: str) -> Loc:
    """``loc`` in a protocol whose tools are flat (``tools.0.name``; their schema under
    ``parameters``) and whose JSON format is flat too, at ``format_at`` (OpenAI Responses'
    ``text.format``, Anthropic's ``output_config.format``): not under Chat Completions' names
    (``tools.0.function.parameters``, ``response_format.json_schema.json_schema.name``, which
    pydantic writes with the format's tag)."""
    if loc[:1] == ("response_format",):
        rest = loc[1:]
        if rest[:1] and rest[0] in _FORMAT_TAGS:
            rest = rest[1:]
        return (*format_at, *(rest[1:] if rest[:1] == ("json_schema",) else rest))
    if loc[:1] == ("tools",) and loc[2:3] == ("function",):
        rest = loc[3:]
        return (*loc[:2], *((parameters, *rest[1:]) if rest[:1] == ("parameters",) else rest))
    return loc


def validation_problems(
    exc: ValidationError, named: Callable[[Loc], Loc] = _as_is
) -> tuple[str | None, str]:
    """The field the first problem is about (None: the body), and what the problems are, as
    every route says them: ``invalid request: messages.0.role: ...; ...`` (the first ten);
    each place as ``named`` names it in the route's own protocol."""
    errors = exc.errors(include_input=False, include_url=False)
    locs = [named(err["loc"]) for err in errors]
    first = str(locs[0][0]) if locs and locs[0] else None
    return first, _problems((loc, _said(err)) for loc, err in zip(locs, errors, strict=True))


def _said(error: ErrorDetails) -> str:
    """A problem as pydantic says it; a lone surrogate in a text with bounds (which
    pydantic-core finds before the protocol's own check) as that check says it."""
    if error["type"] == "string_unicode":
        return f"Value error, {NOT_UNICODE}"
    return error["msg"]


def _problems(errors: Iterable[tuple[tuple[str | int, ...], str]]) -> str:
    said = "; ".join(
        f"{'.'.join(str(p) for p in loc) or 'body'}: {msg}" for loc, msg in islice(errors, 10)
    )
    return f"invalid request: {said}"


@dataclass(frozen=True)
class MessageProblem:
    """A conversation's request refused for one of its messages (the first at fault)."""

    index: int
    """The message's place in ``messages``."""
    field: str
    """Where in the message (``content``, ``tool_calls.0.id``); empty: the message as a whole."""
    first: str
    """The first problem, as pydantic says it."""
    problems: str
    """All the message's problems (the first ten), as ``validation_problems`` says them."""


def message_problem(exc: ValidationError) -> MessageProblem | None:
    """The message at fault when ``exc``'s first problem is in one of a ``PromptRequest``'s
    ``messages``; None when it is about another field. The conversation routes validate a
    whole request at once, and name the message at fault in their protocol's terms."""
    errors = exc.errors(include_input=False, include_url=False)
    loc = errors[0]["loc"] if errors else ()
    if len(loc) < 2 or loc[0] != "messages" or not isinstance(loc[1], int):
        return None
    index = loc[1]
    mine = ((err["loc"][2:], _said(err)) for err in errors if err["loc"][:2] == loc[:2])
    field = ".".join(str(part) for part in loc[2:])
    return MessageProblem(index, field, _said(errors[0]), _problems(mine))


def parse_request(body: bytes) -> PromptRequest:
    try:
        data = decode_json(body)
    except (ValueError, RecursionError):
        raise RequestError(422, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError(422, "the body must be a JSON object with a 'prompt' string")
    try:
        return PromptRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(422, validation_problems(exc)[1]) from None
