"""The middleware every request passes first: the request guard (Host, smuggling shapes, HEAD,
websockets, nosniff, the last-resort JSON 500) and bearer-token auth."""

from __future__ import annotations

import hmac
import logging
from collections.abc import (
    Collection,
)

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptwire.protocol import (
    ErrorBody,
    ErrorDetail,
    ErrorType,
)
from promptwire.server._app_route import route_path
from promptwire.server._errors import error_response

logger = logging.getLogger(__name__)

HEALTH_PATH = "/health"
NOSNIFF = (b"x-content-type-options", b"nosniff")


def _host_name(value: bytes) -> str:
    """The host of a Host header, without its port, brackets or final dot, in lower case."""
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):  # an IPv6 literal
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class RequestGuard:
    """Pure ASGI middleware, the outermost: what must hold of every request and every answer,
    wherever the app runs.

    - every answer carries ``X-Content-Type-Options: nosniff``;
    - a websocket handshake is refused with the protocol's JSON error (400);
    - ``HEAD`` is answered as ``GET`` without the body (RFC 9110 9.1);
    - a request with both ``Content-Length`` and ``Transfer-Encoding`` (a request-smuggling
      attempt) is refused and its connection closed (RFC 9112 6.1);
    - two ``Authorization``, two ``x-api-key`` or two ``Host`` headers are refused (servers and
      proxies disagree on which one counts);
    - with ``allowed_hosts``, a ``Host`` not in it is refused: a loopback server must not answer
      a page that a foreign DNS name pointed at 127.0.0.1 (DNS rebinding);
    - an unexpected exception is answered with the protocol's JSON 500 and goes no further.
      Starlette's own handler re-raises it after answering, and uvicorn then drops the
      keep-alive connection without ``Connection: close``, so a client's next request on it
      fails although the server never saw it. Logged once, here.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def answer(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), NOSNIFF]}
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, answer)
            return
        inner_scope: Scope = scope
        inner_send: Send = answer
        if scope["method"] == "HEAD":
            inner_scope, inner_send = {**scope, "method": "GET"}, _without_body(answer)
        try:
            await self.app(inner_scope, receive, inner_send)
        except Exception:
            logger.exception("unexpected server error")
            if started:  # half a reply is out: only closing the connection can end it
                raise
            await error_response(
                500, ErrorType.SERVER_ERROR, "internal server error", scope=inner_scope
            )(inner_scope, receive, inner_send)

    def _refusal(self, scope: Scope) -> Response | None:
        hosts: list[bytes] = []
        authorizations = api_keys = 0
        length = chunked = False
        for name, value in scope["headers"]:
            if name == b"host":
                hosts.append(value)
            elif name == b"authorization":
                authorizations += 1
            elif name == b"x-api-key":
                api_keys += 1
            elif name == b"content-length":
                length = True
            elif name == b"transfer-encoding":
                chunked = True
        if length and chunked:
            return error_response(
                400,
                ErrorType.BAD_REQUEST,
                "a request may not carry both Content-Length and Transfer-Encoding",
                close=True,
                scope=scope,
            )
        for header, count in (
            ("Authorization", authorizations),
            ("x-api-key", api_keys),
            ("Host", len(hosts)),
        ):
            if count > 1:
                return error_response(
                    400,
                    ErrorType.BAD_REQUEST,
                    f"a request may carry one {header} header",
                    scope=scope,
                )
        if self.allowed_hosts is not None and (
            not hosts or _host_name(hosts[0]) not in self.allowed_hosts
        ):
            return error_response(
                400,
                ErrorType.BAD_REQUEST,
                "this server answers only to its own host names, "
                + ", ".join(sorted(self.allowed_hosts)),
                scope=scope,
            )
        return None


def _without_body(send: Send) -> Send:
    async def head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return head


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """This server has no websocket endpoint. Where the server lets the app answer the
    handshake (the ASGI websocket denial extension: uvicorn, Hypercorn), the answer is the
    protocol's JSON error; elsewhere the handshake is simply closed."""
    if (await receive())["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = ErrorBody(
        error=ErrorDetail(
            type=ErrorType.BAD_REQUEST,
            message="this server has no websocket endpoint; see the prompt endpoint protocol",
        )
    ).model_dump_json(exclude_none=True)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json"), NOSNIFF],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body.encode()})


class BearerAuth:
    """Pure ASGI middleware: every route but ``open_paths`` (``/health``) needs the token, as
    ``Authorization: Bearer <token>`` or (as Anthropic's clients send it) ``x-api-key:
    <token>``, on every route alike; either one right is enough."""

    def __init__(
        self, app: ASGIApp, token: str, open_paths: Collection[str] = (HEALTH_PATH,)
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
            elif name == b"x-api-key":
                api_key = value
        if given is not None:
            scheme, _, credentials = given.partition(b" ")
            # The scheme is case-insensitive (RFC 9110 11.1); the token is compared in constant
            # time.
            if scheme.lower() == b"bearer" and hmac.compare_digest(
                credentials.strip(b" "), self.token
            ):
                await self.app(scope, receive, send)
                return
        if api_key is not None and hmac.compare_digest(api_key.strip(b" "), self.token):
            await self.app(scope, receive, send)
            return
        if given is None and api_key is None:
            reason = "missing bearer token (Authorization: Bearer, or x-api-key)"
        else:
            reason = "invalid bearer token" if given is not None else "invalid x-api-key"
        await error_response(401, ErrorType.UNAUTHORIZED, reason, scope=scope)(scope, receive, send)
