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

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from pydantic import ValidationError
from pydantic_core import to_json
from sse_starlette import ServerSentEvent
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptwire.engine import (
    Completion,
    Engine,
    EngineError,
    EngineEvent,
    RequestUnsupported,
    TextChunk,
    ToolCall,
    check_capabilities,
    render_request,
)
from promptwire.protocol import (
    MAX_MESSAGE_CHARS,
    ChatMessage,
    ChatRole,
    ErrorType,
    PromptRequest,
    Usage,
)
from promptwire.server._errors import STATUS_ERROR_TYPES
from promptwire.server._request_body import (
    DECODER,
    ClientGone,
    read_body,
    require_json,
    unless_gone,
)
from promptwire.server._shutdown import GracefulShutdown
from promptwire.server._slots import RETRY_AFTER_SECONDS, RequestSlots
from promptwire.server._streaming import Job, StreamForm, prepare, stream_reply
from promptwire.server.observability._request_context import note_error
from promptwire.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
    OpenAIErrorBody,
    OpenAIErrorDetail,
    error_type_for,
)

PREFIX = "/v1"
#: The id ``/v1/models`` lists for an engine that does not name its model.
DEFAULT_MODEL_ID = "promptwire"
OWNED_BY = "promptwire"
DONE = "[DONE]"

_ROLES: dict[str, ChatRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


_PROTOCOL_ERROR_TYPES = frozenset(ErrorType)


class OpenAIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    @classmethod
    def from_engine(cls, exc: EngineError) -> OpenAIError:
        # OpenAI answers a request its model cannot serve (too long a prompt) with 400.
        status = 400 if exc.status_code == 422 else exc.status_code
        return cls(status, exc.message, code=str(exc.error_type), retry_after=exc.retry_after)

    def response(self) -> Response:
        return error_response(
            self.status_code,
            self.message,
            param=self.param,
            code=self.code,
            retry_after=self.retry_after,
        )


def error_response(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    # Counted (metrics, log line) under the protocol's error type, as the prompt route's are.
    protocol_type = code if code in _PROTOCOL_ERROR_TYPES else None
    request_id = note_error(
        protocol_type or STATUS_ERROR_TYPES.get(status_code, ErrorType.SERVER_ERROR)
    )
    detail = OpenAIErrorDetail(
        message=message,
        type=error_type_for(status_code),
        param=param,
        code=code,
        request_id=request_id,
    )
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return Response(
        OpenAIErrorBody(error=detail).model_dump_json(),
        status_code,
        headers=headers,
        media_type="application/json",
    )


def is_openai_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class OpenAIErrorShape:
    """Pure ASGI middleware: on the OpenAI paths, an error answered in the prompt protocol's
    shape (``{"error": {"type", "message"}}``, by auth, routing or the app's last-resort 500)
    is reshaped as OpenAI's, the protocol's ``type`` becoming its ``code``. Other paths, and
    successful answers, pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_openai_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body = bytearray()

        async def reshape(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                start, content = _reshaped(held, bytes(body))
                await send(start)
                await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, reshape)


def _reshaped(start: Message, content: bytes) -> tuple[Message, bytes]:
    try:
        error = json.loads(content)["error"]
        kind, message = error["type"], error["message"]
    except (ValueError, KeyError, TypeError):
        return start, content
    if not isinstance(error, dict) or "param" in error:  # already OpenAI's shape
        return start, content
    detail = OpenAIErrorDetail(
        message=str(message),
        type=error_type_for(start["status"]),
        code=str(kind),
        request_id=error.get("request_id"),
    )
    content = OpenAIErrorBody(error=detail).model_dump_json().encode()
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(content)).encode()))
    return {**start, "headers": headers}, content


def add_openai_routes(
    app: FastAPI,
    engine: Engine[Any],
    *,
    serving: Callable[[], bool],
    slots: RequestSlots,
    max_body_bytes: int,
    body_timeout: float | None,
    send_timeout: float | None,
    shutdown: GracefulShutdown,
) -> None:
    """Serve the OpenAI API on ``app`` with ``engine`` (while ``serving()``), sharing ``slots``,
    the limits and the ``shutdown`` with its other routes (``create_app`` calls this)."""
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
                503, "the model is loading", code="not_ready", retry_after=RETRY_AFTER_SECONDS
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
        return _json({"object": "list", "data": [model_card(model_id())]})

    @app.get(PREFIX + "/models/{name:path}", include_in_schema=False)
    async def retrieve_model(name: str) -> Response:
        return _json(model_card(served_model(name)))

    async def read(request: Request) -> bytes:
        """The body, once it is declared JSON and within the size limit and deadline (their
        errors, in the prompt protocol's shape, are reshaped by ``OpenAIErrorShape``)."""
        require_json(request)
        return await read_body(request, max_body_bytes, body_timeout)

    @app.post(PREFIX + "/completions", include_in_schema=False)
    async def completions(request: Request) -> Response:
        try:
            raw = await read(request)
        except ClientGone:
            return Response(status_code=499)
        body = _parse(CompletionRequest, raw)
        params = body.generation_params()
        prompts = body.prompts()
        model, release = admit(body.model, len(prompts))
        streaming = False
        try:
            jobs = [_prompt_job(engine, prompt, params) for prompt in prompts]
            writer = _Writer("cmpl", "text_completion", model)
            echo = prompts if body.echo else None
            if body.stream:
                form = _Chunks(writer, body.include_usage(), echo)
                response = await stream_reply(
                    engine, jobs[0], request.receive, release, shutdown, send_timeout, form
                )
                streaming = True  # the stream releases its slots when it ends
                return response
            done = await _complete(engine, jobs, request.receive, shutdown)
            return _json(writer.completion(done, echo))
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; the access log shows it
        except EngineError as exc:
            raise OpenAIError.from_engine(exc) from None
        finally:
            if not streaming:
                release()

    @app.post(PREFIX + "/chat/completions", include_in_schema=False)
    async def chat_completions(request: Request) -> Response:
        try:
            raw = await read(request)
        except ClientGone:
            return Response(status_code=499)
        body = _parse(ChatCompletionRequest, raw)
        conversation = _chat_request(body, _chat_messages(body.messages))
        model, release = admit(body.model, 1)
        streaming = False
        try:
            _check_capabilities(engine, conversation)
            # As on the prompt route: the rendering in ``prompt``, the conversation kept in
            # ``messages`` (an engine may tokenize a template's rendering differently).
            job = prepare(
                engine,
                conversation.model_copy(update={"prompt": render_request(engine, conversation)}),
            )
            writer = _Writer("chatcmpl", "chat.completion", model)
            if body.stream:
                form = _Chunks(writer, body.include_usage(), None)
                response = await stream_reply(
                    engine, job, request.receive, release, shutdown, send_timeout, form
                )
                streaming = True
                return response
            done = await _complete(engine, [job], request.receive, shutdown)
            return _json(writer.chat_completion(done[0]))
        except ClientGone:
            return Response(status_code=499)
        except EngineError as exc:
            raise OpenAIError.from_engine(exc) from None
        finally:
            if not streaming:
                release()

    async def on_openai_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        return exc.response()

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_middleware(OpenAIErrorShape)


# -- requests ----------------------------------------------------------------------------------


RequestT = TypeVar("RequestT", bound=GenerationRequest)


def _parse(model: type[RequestT], body: bytes) -> RequestT:
    try:
        # As on the prompt route: UTF-8 (a BOM ignored), NaN and Infinity are not JSON, an
        # integer too long to convert is an infinity, which every field that takes one refuses.
        data = DECODER.decode(body.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        raise OpenAIError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the body must be a JSON object", code="invalid_request")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        first = errors[0]["loc"] if errors else ()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in errors[:10]
        )
        raise OpenAIError(
            400,
            f"invalid request: {problems}",
            param=str(first[0]) if first else None,
            code="invalid_request",
        ) from None
    if (found := parsed.unsupported()) is not None:
        param, message = found
        raise OpenAIError(400, message, param=param, code="unsupported_parameter")
    return parsed


def _chat_messages(messages: Sequence[dict[str, Any]]) -> list[ChatMessage]:
    """OpenAI's messages as the prompt protocol's: text content, tool calls, tool results."""
    converted = []
    for index, message in enumerate(messages):
        param = f"messages.{index}"
        role = _ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise OpenAIError(
                400,
                f"{param}.role must be system, developer, user, assistant or tool, "
                f"not {message.get('role')!r}",
                param=f"{param}.role",
                code="invalid_request",
            )
        if message.get("function_call"):
            raise OpenAIError(
                400,
                "function_call (legacy) is not supported: use tool_calls",
                param=f"{param}.function_call",
                code="unsupported_parameter",
            )
        text = _message_text(message.get("content"), role, f"{param}.content")
        fields: dict[str, Any] = {"role": role, "content": text}
        if role == "assistant" and message.get("tool_calls"):
            fields["tool_calls"] = message["tool_calls"]
        if role == "tool":
            fields["tool_call_id"] = message.get("tool_call_id")
        try:
            converted.append(ChatMessage.model_validate(fields))
        except ValidationError as exc:
            error = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            raise OpenAIError(
                400,
                f"{param}{'.' + where if where else ''}: {error['msg']} (content must be valid "
                f"Unicode text of at most {MAX_MESSAGE_CHARS} characters)",
                param=f"{param}.{where}" if where else param,
                code="invalid_request",
            ) from None
    return converted


def _check_capabilities(engine: Engine[Any], request: PromptRequest) -> None:
    """As on the prompt route, but answered as OpenAI answers a parameter it cannot honour."""
    try:
        check_capabilities(engine, request)
    except RequestUnsupported as exc:
        param = "tools" if request.wants_tools() and "tool" in exc.message else "response_format"
        raise OpenAIError(400, exc.message, param=param, code="unsupported_parameter") from None


def _chat_request(body: ChatCompletionRequest, messages: list[ChatMessage]) -> PromptRequest:
    """The prompt protocol's request for a chat completion, its prompt not yet rendered: the
    conversation, the generation parameters, and the tools and response format (v1.2), checked
    by the protocol's own rules (a named tool_choice must be among the tools, ...)."""
    fields: dict[str, Any] = {**body.generation_params(), "prompt": "", "messages": messages}
    for name in ("tools", "tool_choice", "response_format"):
        if (value := getattr(body, name)) is not None:
            fields[name] = value
    try:
        return PromptRequest.model_validate(fields)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        first = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
        if first is None and errors:  # the rules between fields name the field they are about
            said = errors[0]["msg"]
            first = next(
                (n for n in ("tool_choice", "tools", "response_format") if n in said), None
            )
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in errors[:10]
        )
        raise OpenAIError(
            400, f"invalid request: {problems}", param=first, code="invalid_request"
        ) from None


def _message_text(content: Any, role: str, param: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":  # a turn that only called tools
        return ""
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


def _prompt_job(engine: Engine[Any], prompt: str, params: dict[str, Any]) -> Job:
    """The prompt protocol's request for ``prompt``, prepared by the engine before generating.
    (Its fields have the protocol's own types, already checked in the OpenAI request.)"""
    return prepare(engine, PromptRequest(prompt=prompt, **params))


# -- generation --------------------------------------------------------------------------------


async def _complete(
    engine: Engine[Any],
    jobs: Sequence[Job],
    receive: Callable[[], Awaitable[Any]],
    shutdown: GracefulShutdown,
) -> list[Completion]:
    """Each request's completion, run at once. If the client leaves first (``ClientGone``) or
    the shutdown's grace period ends (503), they are all cancelled, freeing the engine."""
    if len(jobs) == 1:
        job = jobs[0]
        return [await unless_gone(engine.complete(job.request, job.prepared), receive, shutdown)]
    work = asyncio.gather(*(engine.complete(job.request, job.prepared) for job in jobs))
    return await unless_gone(work, receive, shutdown)


class _Chunks(StreamForm):
    """A stream written as OpenAI's chunks: the role first (chat), the echoed prompt if asked,
    the text, the finish reason, the usage if asked, then ``[DONE]``."""

    def __init__(self, writer: _Writer, include_usage: bool, echo: list[str] | None) -> None:
        super().__init__(writer.model)
        self.writer = writer
        self.include_usage = include_usage
        self.echo = echo

    def opening(self) -> Sequence[ServerSentEvent]:
        opening = []
        if self.writer.chat:
            opening.append(ServerSentEvent(self.writer.role_chunk()))
        if self.echo:
            opening.append(ServerSentEvent(self.writer.text_chunk(self.echo[0])))
        return opening

    def event(self, event: EngineEvent) -> Sequence[ServerSentEvent]:
        if isinstance(event, TextChunk):
            return (ServerSentEvent(self.writer.text_chunk(event.text)),) if event.text else ()
        if isinstance(event, ToolCall):
            self.calls += 1
            return (ServerSentEvent(self.writer.tool_call_chunk(self.calls - 1, event)),)
        written = [ServerSentEvent(self.writer.finish_chunk(event.finish_reason))]
        if self.include_usage:
            written.append(ServerSentEvent(self.writer.usage_chunk(event.usage)))
        written.append(ServerSentEvent(DONE))
        return written

    def error(self, status_code: int, error_type: str, message: str) -> ServerSentEvent:
        status = 400 if status_code == 422 else status_code
        return ServerSentEvent(_error_data(OpenAIError(status, message, code=str(error_type))))


def _error_data(error: OpenAIError) -> str:
    """A failure after the stream began: a ``data:`` line holding an ``error`` object, which
    OpenAI's SDK raises as an ``APIError``; no ``[DONE]`` follows."""
    detail = OpenAIErrorDetail(
        message=error.message,
        type=error_type_for(error.status_code),
        param=error.param,
        code=error.code,
    )
    return OpenAIErrorBody(error=detail).model_dump_json()


# -- replies -----------------------------------------------------------------------------------


def _json(data: dict[str, Any]) -> Response:
    return Response(_dumps(data), media_type="application/json")


def _dumps(data: dict[str, Any]) -> bytes:
    return to_json(data)  # pydantic's encoder: a third of json.dumps' time here


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "function": {"name": call.name, "arguments": call.arguments}}


class _Writer:
    """The replies and chunks of one request, all with its id, creation time and model."""

    def __init__(self, id_prefix: str, kind: str, model: str) -> None:
        self.chat = kind == "chat.completion"
        self.model = model
        self.head = {
            "id": f"{id_prefix}-{os.urandom(12).hex()}",
            "object": kind,
            "created": int(time.time()),
            "model": model,
        }
        self.chunk_kind = f"{kind}.chunk" if self.chat else kind

    def completion(self, done: Sequence[Completion], echo: list[str] | None) -> dict[str, Any]:
        choices = [
            {
                "index": index,
                "text": (echo[index] if echo else "") + completion.text,
                "logprobs": None,
                "finish_reason": str(completion.finish_reason),
            }
            for index, completion in enumerate(done)
        ]
        if len(done) == 1:
            usage = _usage(done[0].usage)
        else:
            prompt = sum(c.usage.prompt_tokens for c in done)
            completion = sum(c.usage.completion_tokens for c in done)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return {**self.head, "choices": choices, "usage": usage}

    def chat_completion(self, done: Completion) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": done.text}
        if done.tool_calls:
            message["content"] = done.text or None  # as OpenAI answers a turn of calls only
            message["tool_calls"] = [
                _tool_call(call) | {"type": "function"} for call in done.tool_calls
            ]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": str(done.finish_reason),
        }
        return {**self.head, "choices": [choice], "usage": _usage(done.usage)}

    def _chunk(self, choice: dict[str, Any]) -> str:
        return self._text({"choices": [{"index": 0, **choice}]})

    def _text(self, fields: dict[str, Any]) -> str:
        return _dumps({**self.head, "object": self.chunk_kind, **fields}).decode()

    def role_chunk(self) -> str:
        delta = {"role": "assistant", "content": ""}
        return self._chunk({"delta": delta, "logprobs": None, "finish_reason": None})

    def text_chunk(self, text: str) -> str:
        if self.chat:
            return self._chunk(
                {"delta": {"content": text}, "logprobs": None, "finish_reason": None}
            )
        return self._chunk({"text": text, "logprobs": None, "finish_reason": None})

    def tool_call_chunk(self, index: int, call: ToolCall) -> str:
        delta = {"tool_calls": [{"index": index, **_tool_call(call), "type": "function"}]}
        return self._chunk({"delta": delta, "logprobs": None, "finish_reason": None})

    def finish_chunk(self, reason: Any) -> str:
        if self.chat:
            return self._chunk({"delta": {}, "logprobs": None, "finish_reason": str(reason)})
        return self._chunk({"text": "", "logprobs": None, "finish_reason": str(reason)})

    def usage_chunk(self, usage: Usage) -> str:
        return self._text({"choices": [], "usage": _usage(usage)})
