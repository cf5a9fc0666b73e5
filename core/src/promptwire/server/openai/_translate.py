"""OpenAI's requests as the engine's: strict parsing, chat messages, capabilities, and the jobs
a ``/v1/completions`` request runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from promptwire.engine import (
    Completion,
    Engine,
    RequestUnsupported,
    check_capabilities,
)
from promptwire.protocol import (
    MAX_MESSAGE_CHARS,
    ChatRole,
    PromptRequest,
)
from promptwire.server._refusals import RefusingRequest
from promptwire.server._request_body import (
    Loc,
    UnservableJSON,
    decode_unicode_json,
    message_problem,
    unless_gone,
    validation_problems,
)
from promptwire.server._shutdown import GracefulShutdown
from promptwire.server._streaming import Job, prepare
from promptwire.server.openai._errors import OpenAIError
from promptwire.server.openai.protocol import (
    ChatCompletionRequest,
)

_ROLES: dict[str, ChatRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


# -- requests ----------------------------------------------------------------------------------


RequestT = TypeVar("RequestT", bound=RefusingRequest)


def parse_request(model: type[RequestT], body: bytes) -> RequestT:
    """``body`` as ``model`` (a pydantic model), strictly: OpenAI's 400s for what is not JSON,
    not an object, not the model, or asks for what cannot be served."""
    try:
        # As on the prompt route: UTF-8 (a BOM ignored), NaN and Infinity are not JSON; and
        # nothing a reply could not echo (a lone surrogate, a number beyond a double's range).
        data = decode_unicode_json(body)
    except UnservableJSON as exc:
        raise OpenAIError(400, str(exc), code="invalid_request") from None
    except (ValueError, RecursionError):
        raise OpenAIError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the body must be a JSON object", code="invalid_request")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        param, message = validation_problems(exc)
        raise OpenAIError(400, message, param=param, code="invalid_request") from None
    if (found := parsed.unsupported()) is not None:
        param, message = found
        raise OpenAIError(400, message, param=param, code="unsupported_parameter")
    return parsed


def chat_messages(
    messages: Sequence[dict[str, Any]], where: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """OpenAI's messages as the prompt protocol's message fields (text content, tool calls,
    tool results), checked as ``PromptRequest`` checks them once ``conversation_request`` has
    them all. ``where``: each message's place in the request, for errors (default
    ``messages.<index>``)."""
    converted = []
    for index, message in enumerate(messages):
        said = message.get("role")
        role = _ROLES.get(said) if isinstance(said, str) else None
        if role is None:
            param = _place(where, index)
            raise OpenAIError(
                400,
                f"{param}.role must be system, developer, user, assistant or tool, "
                f"not {_shown(said)}",
                param=f"{param}.role",
                code="invalid_request",
            )
        if message.get("function_call"):
            raise OpenAIError(
                400,
                "function_call (legacy) is not supported: use tool_calls",
                param=f"{_place(where, index)}.function_call",
                code="unsupported_parameter",
            )
        content = message.get("content")
        text = content if isinstance(content, str) else _message_text(content, role, where, index)
        fields: dict[str, Any] = {"role": role, "content": text}
        if role == "assistant" and message.get("tool_calls"):
            fields["tool_calls"] = message["tool_calls"]
        if role == "tool":
            fields["tool_call_id"] = message.get("tool_call_id")
        converted.append(fields)
    return converted


def _place(where: Sequence[str] | None, index: int) -> str:
    return where[index] if where is not None else f"messages.{index}"


def _shown(value: Any) -> str:
    """A value a client sent, quoted in an error: a string cut short, else only its type."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return "null" if value is None else f"a {type(value).__name__}"


def check_request(engine: Engine[Any], request: PromptRequest) -> None:
    """As on the prompt route, but answered as OpenAI answers a parameter it cannot honour."""
    try:
        check_capabilities(engine, request)
    except RequestUnsupported as exc:
        param = "tools" if request.wants_tools() and "tool" in exc.message else "response_format"
        raise OpenAIError(400, exc.message, param=param, code="unsupported_parameter") from None


def chat_request(body: ChatCompletionRequest) -> PromptRequest:
    """The prompt protocol's request for a chat completion, its prompt not yet rendered: the
    conversation, the generation parameters, and the tools and response format (v1.2), checked
    by the protocol's own rules (a named tool_choice must be among the tools, ...)."""
    fields: dict[str, Any] = {
        **body.generation_params(),
        "prompt": "",
        "messages": chat_messages(body.messages),
    }
    for name in ("tools", "tool_choice", "response_format"):
        if (value := getattr(body, name)) is not None:
            fields[name] = value
    if body.continue_final_message:
        fields["continue_final_message"] = True
    return conversation_request(fields)


def conversation_request(
    fields: dict[str, Any],
    where: Sequence[str] | None = None,
    named: Callable[[Loc], Loc] | None = None,
) -> PromptRequest:
    """The prompt protocol's request of ``fields`` (its messages as ``chat_messages`` makes
    them), checked in one pass; or OpenAI's 400 naming the field at fault (``messages.2.content``
    (or its place in ``where``), ``tools``, ``tool_choice``, ``response_format``, ...)."""
    try:
        return PromptRequest.model_validate(fields)
    except ValidationError as exc:
        if (fault := message_problem(exc)) is not None:
            place = _place(where, fault.index)
            field = f"{place}.{fault.field}" if fault.field else place
            hint = (
                f" (content must be valid Unicode text of at most {MAX_MESSAGE_CHARS} characters)"
                if fault.field == "content"
                else ""
            )
            raise OpenAIError(
                400, f"{field}: {fault.first}{hint}", param=field, code="invalid_request"
            ) from None
        param, message = (
            validation_problems(exc) if named is None else validation_problems(exc, named)
        )
        if param is None:  # the rules between fields name the field they are about
            param = next(
                (n for n in ("tool_choice", "tools", "response_format") if n in message), None
            )
        raise OpenAIError(400, message, param=param, code="invalid_request") from None


def _message_text(content: Any, role: str, where: Sequence[str] | None, index: int) -> str:
    """A message's content that is not a string: the text of its text parts; none for an
    assistant turn that only called tools."""
    if content is None and role == "assistant":
        return ""
    param = f"{_place(where, index)}.content"
    if isinstance(content, list):
        pieces = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise OpenAIError(
                    400,
                    f"{param}: only text content parts are supported by this server, not {kind!r}",
                    param=param,
                    code="unsupported_content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise OpenAIError(400, f"{param}: a text part needs a 'text' string", param=param)
            pieces.append(text)
        return "".join(pieces)
    raise OpenAIError(
        400,
        f"{param} must be a string or a list of text parts",
        param=param,
        code="invalid_request",
    )


def prompt_job(engine: Engine[Any], prompt: str, params: dict[str, Any]) -> Job:
    """The prompt protocol's request for ``prompt``, prepared by the engine before generating.
    (Its fields have the protocol's own types, already checked in the OpenAI request.)"""
    return prepare(engine, PromptRequest(prompt=prompt, **params))


# -- generation --------------------------------------------------------------------------------


async def complete_jobs(
    engine: Engine[Any],
    jobs: Sequence[Job],
    receive: Callable[[], Awaitable[Any]],
    shutdown: GracefulShutdown,
) -> list[Completion]:
    """Each request's completion, run at once. If one fails (a full queue's 503), the client
    leaves (``ClientGone``) or the shutdown's grace period ends (503), they are all cancelled,
    freeing the engine."""
    if len(jobs) == 1:
        job = jobs[0]
        return [await unless_gone(engine.complete(job.request, job.prepared), receive, shutdown)]
    work = _complete_all(engine, jobs)
    return await unless_gone(work, receive, shutdown)


async def _complete_all(engine: Engine[Any], jobs: Sequence[Job]) -> list[Completion]:
    """Each job's completion, in order; when one fails, the others are cancelled, and its error
    is raised once they have ended. (``asyncio.gather`` raised the first error at once and left
    the others running: the prompts admitted beside a refused one generated for nobody.)"""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(engine.complete(job.request, job.prepared)) for job in jobs]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
