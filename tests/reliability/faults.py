"""A deliberately misbehaving HTTP server on 127.0.0.1, written on raw asyncio sockets.

uvicorn cannot be made to reset a connection halfway through a body or drip a status line one
byte at a time, so this server speaks HTTP/1.1 by hand. Each behaviour lives at ``/<name>/<id>``;
``FaultServer.url(name)`` hands out a fresh ``id`` so every test counts its own requests
(``FaultServer.count(url)``), which is how a test proves a request was retried or not repeated.
Every behaviour is bounded in time (``MAX_HANG``), so nothing can outlive the test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_HANG = 60.0
"""The longest any behaviour keeps a connection open (a hang, a drip, a ping loop)."""
DRIP_INTERVAL = 0.05


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    count: int
    """How many requests this path has seen, this one included."""
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(
        self,
        status: int,
        body: bytes | str,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        await self.send(
            head(
                status,
                {"Content-Type": content_type, "Content-Length": str(len(data)), **(headers or {})},
            )
            + data
        )

    async def reply_json(self, status: int, obj: Any, **options: Any) -> None:
        await self.reply(status, json.dumps(obj), **options)

    def reset(self) -> None:
        """Close with an RST instead of a FIN (SO_LINGER on, zero seconds)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


REASONS = {
    200: "OK",
    303: "See Other",
    401: "Unauthorized",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\r\ndata: {json.dumps(data)}\r\n\r\n".encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


SSE_HEADERS = {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"}
HTML_500 = "<html><head><title>500</title></head><body><h1>Internal Server Error</h1></body></html>"
HTML_502 = "<html><body><center><h1>502 Bad Gateway</h1></center><hr>nginx</body></html>"
OK_REPLY = {"prompt": "ok", "finish_reason": "stop"}

Behaviour = Callable[[Request], Awaitable[None]]
BEHAVIOURS: dict[str, Behaviour] = {}


def behaviour(name: str) -> Callable[[Behaviour], Behaviour]:
    def register(fn: Behaviour) -> Behaviour:
        BEHAVIOURS[name] = fn
        return fn

    return register


@behaviour("ok")
async def _ok(r: Request) -> None:
    await r.reply_json(200, OK_REPLY)


@behaviour("status")
async def _status(r: Request) -> None:
    """``?code=500&body=html|json|text`` and optionally ``retry_after``."""
    code = int(r.query.get("code", "500"))
    headers = {"Retry-After": r.query["retry_after"]} if "retry_after" in r.query else {}
    kind = r.query.get("body", "json")
    if kind == "html":
        await r.reply(
            code, HTML_502 if code == 502 else HTML_500, content_type="text/html", headers=headers
        )
    elif kind == "text":
        await r.reply(code, "upstream said no", content_type="text/plain", headers=headers)
    else:
        error = {"error": {"type": r.query.get("type", "overloaded"), "message": "try later"}}
        await r.reply_json(code, error, headers=headers)


@behaviour("fail-then-ok")
async def _fail_then_ok(r: Request) -> None:
    """The first ``n`` requests get ``/status`` (same query), the next ones succeed."""
    if r.count <= int(r.query.get("n", "1")):
        await _status(r)
    else:
        await r.reply_json(200, {"prompt": f"ok after {r.count - 1} failures"})


@behaviour("redirect")
async def _redirect(r: Request) -> None:
    """Modal's long-request dance: 303s (``left`` more of them, or forever) then the result."""
    left = r.query.get("left", "forever")
    if left == "forever" or int(left) > 0:
        following = left if left == "forever" else str(int(left) - 1)
        await r.reply(303, b"", headers={"Location": f"{r.path}?left={following}"})
    else:
        await r.reply_json(200, {"prompt": f"result via {r.method}"})


@behaviour("not-json")
async def _not_json(r: Request) -> None:
    await r.reply(200, "hello world", content_type="text/plain")


@behaviour("no-prompt")
async def _no_prompt(r: Request) -> None:
    await r.reply_json(200, {"text": "hello world", "choices": []})


@behaviour("reset-mid-body")
async def _reset_mid_body(r: Request) -> None:
    await r.send(head(200, {"Content-Type": "application/json", "Content-Length": "1000"}))
    await r.send(b'{"prompt": "the first')
    await asyncio.sleep(0.05)
    r.reset()


@behaviour("close-mid-body")
async def _close_mid_body(r: Request) -> None:
    await r.send(head(200, {"Content-Type": "application/json", "Content-Length": "1000"}))
    await r.send(b'{"prompt": "the first')


@behaviour("reset-before-reply")
async def _reset_before_reply(r: Request) -> None:
    r.reset()


@behaviour("close-before-reply")
async def _close_before_reply(r: Request) -> None:
    return  # the connection is closed (FIN) with no reply at all


@behaviour("hang")
async def _hang(r: Request) -> None:
    await asyncio.sleep(MAX_HANG)


@behaviour("drip")
async def _drip(r: Request) -> None:
    """A valid reply, one byte at a time: each read succeeds, the whole takes far too long."""
    body = json.dumps({"prompt": "x" * 2000}).encode()
    await r.send(head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}))
    await _drip_bytes(r, body)


@behaviour("drip-head")
async def _drip_head(r: Request) -> None:
    """Even the status line and headers arrive one byte at a time."""
    body = json.dumps(OK_REPLY).encode()
    data = head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
    await _drip_bytes(r, data + body)


async def _drip_bytes(r: Request, data: bytes) -> None:
    deadline = asyncio.get_running_loop().time() + MAX_HANG
    for index in range(len(data)):
        await r.send(data[index : index + 1])
        await asyncio.sleep(DRIP_INTERVAL)
        if asyncio.get_running_loop().time() > deadline:
            return


@behaviour("stream-ok")
async def _stream_ok(r: Request) -> None:
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})) + chunk(sse("delta", {"text": "world"})))
    await r.send(chunk(sse("done", {"finish_reason": "stop"})) + b"0\r\n\r\n")


@behaviour("stream-cut")
async def _stream_cut(r: Request) -> None:
    """One event, then half of the next, then the connection closes (chunked: a framing error)."""
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})) + chunk(b'event: delta\r\ndata: {"te'))
    await asyncio.sleep(0.05)


@behaviour("stream-cut-eof")
async def _stream_cut_eof(r: Request) -> None:
    """Close-delimited body (no length, no chunks): the cut looks like a clean end of body."""
    await r.send(head(200, {"Content-Type": "text/event-stream"}))
    await r.send(sse("delta", {"text": "hello "}) + b'event: delta\r\ndata: {"te')
    await asyncio.sleep(0.05)


@behaviour("stream-reset")
async def _stream_reset(r: Request) -> None:
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})))
    await asyncio.sleep(0.05)
    r.reset()


@behaviour("stream-pings")
async def _stream_pings(r: Request) -> None:
    """One event, then only keep-alive comments: the connection is busy, the model is stuck."""
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})))
    deadline = asyncio.get_running_loop().time() + MAX_HANG
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(DRIP_INTERVAL)
        await r.send(chunk(b": ping\r\n\r\n"))


@behaviour("stream-drip")
async def _stream_drip(r: Request) -> None:
    """One event, then the next event one byte at a time."""
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})))
    data = sse("delta", {"text": "w" * 2000})
    deadline = asyncio.get_running_loop().time() + MAX_HANG
    for index in range(len(data)):
        await r.send(chunk(data[index : index + 1]))
        await asyncio.sleep(DRIP_INTERVAL)
        if asyncio.get_running_loop().time() > deadline:
            return


@behaviour("stream-hang")
async def _stream_hang(r: Request) -> None:
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})))
    await asyncio.sleep(MAX_HANG)


@behaviour("stream-error")
async def _stream_error(r: Request) -> None:
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})))
    error = {"error": {"type": "server_error", "message": "the GPU fell over"}}
    await r.send(chunk(sse("error", error)) + b"0\r\n\r\n")


@behaviour("stream-garbage")
async def _stream_garbage(r: Request) -> None:
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(b"event: delta\r\ndata: {not json\r\n\r\n") + b"0\r\n\r\n")


@behaviour("cookie")
async def _cookie(r: Request) -> None:
    """Sets a cookie and answers with the ``Cookie`` header it was sent (a stateless client sends
    none)."""
    sent = r.headers.get("cookie", "no cookie")
    await r.reply_json(200, {"prompt": sent}, headers={"Set-Cookie": "session=abc; Path=/"})


@behaviour("echo-auth")
async def _echo_auth(r: Request) -> None:
    """A hostile or careless server that quotes the caller's credentials back in its answer:
    ``?as=error`` (JSON error), ``html`` (an HTML 500), ``key`` (a 200 whose only key is the
    header), ``event`` (a stream error event) or ``notjson`` (a 200 text body)."""
    secret = r.headers.get("authorization", "") + " " + r.headers.get("modal-key", "")
    kind = r.query.get("as", "error")
    if kind == "error":
        await r.reply_json(401, {"error": {"type": "unauthorized", "message": f"bad {secret}"}})
    elif kind == "html":
        await r.reply(500, f"<html><body>{secret}</body></html>", content_type="text/html")
    elif kind == "key":
        await r.reply_json(200, {secret: "value"})
    elif kind == "notjson":
        await r.reply(200, f"you sent {secret}", content_type="text/plain")
    else:
        await r.send(head(200, SSE_HEADERS))
        error = {"error": {"type": "server_error", "message": f"bad {secret}"}}
        await r.send(chunk(sse("error", error)) + b"0\r\n\r\n")


@behaviour("redirect-to")
async def _redirect_to(r: Request) -> None:
    """``?code=303|307|308&to=<url>``: one redirect to another URL (another origin, say)."""
    await r.reply(int(r.query.get("code", "303")), b"", headers={"Location": r.query["to"]})


@functools.cache
def gzip_bomb(mib: int) -> bytes:
    """A gzip body that inflates to ``mib`` MiB of a valid-looking reply (made once)."""
    packer = zlib.compressobj(9, wbits=zlib.MAX_WBITS | 16)
    zeros = b"0" * (1 << 20)
    parts = [packer.compress(b'{"prompt": "')]
    parts += [packer.compress(zeros) for _ in range(mib)]
    parts += [packer.compress(b'"}'), packer.flush()]
    return b"".join(parts)


@behaviour("gzip-bomb")
async def _gzip_bomb(r: Request) -> None:
    """``?mib=N``: a small gzip body that inflates to N MiB (``gzip_bomb``)."""
    body = await asyncio.to_thread(gzip_bomb, int(r.query.get("mib", "256")))
    await r.reply(200, body, headers={"Content-Encoding": "gzip"})


@behaviour("huge")
async def _huge(r: Request) -> None:
    """``?mib=N``: a valid reply of N MiB, declared up front and sent as fast as it is read."""
    size = int(r.query.get("mib", "200")) << 20
    prefix, suffix = b'{"prompt": "', b'"}'
    length = len(prefix) + size + len(suffix)
    await r.send(head(200, {"Content-Type": "application/json", "Content-Length": str(length)}))
    await r.send(prefix)
    piece = b"x" * (1 << 20)
    for _ in range(size >> 20):
        await r.send(piece)
    await r.send(suffix)


@behaviour("endless-line")
async def _endless_line(r: Request) -> None:
    """A stream whose first line never ends (up to ``?mib=N`` MiB, default 512)."""
    await r.send(head(200, {"Content-Type": "text/event-stream"}))
    await r.send(b"event: delta\r\ndata: ")
    piece = b"a" * (1 << 20)
    deadline = asyncio.get_running_loop().time() + MAX_HANG
    for _ in range(int(r.query.get("mib", "512"))):
        await r.send(piece)
        if asyncio.get_running_loop().time() > deadline:
            return


KEEPALIVES = {
    "ping-event": b"event: ping\r\ndata: {}\r\n\r\n",
    "data-only": b"data: still here\r\n\r\n",
    "retry-only": b"retry: 1000\r\n\r\n",
    "id-then-blank": b"id: 7\r\n\r\n",
    "unknown-event": b'event: progress\r\ndata: {"percent": 50}\r\n\r\n',
}


@behaviour("stream-keepalives")
async def _stream_keepalives(r: Request) -> None:
    """One event, then only ``?kind=`` keep-alives that carry no text (see ``KEEPALIVES``)."""
    await r.send(head(200, SSE_HEADERS))
    await r.send(chunk(sse("delta", {"text": "hello "})))
    keepalive = KEEPALIVES[r.query["kind"]]
    deadline = asyncio.get_running_loop().time() + MAX_HANG
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(DRIP_INTERVAL)
        await r.send(chunk(keepalive))


@behaviour("odd-json")
async def _odd_json(r: Request) -> None:
    """``?kind=``: ``nested`` (100,000 levels deep in an unknown key), ``bigint`` (a 5,000-digit
    integer in an unknown key), ``nan`` (NaN, which is not JSON); ``?as=event`` sends it as a
    stream's ``done`` event instead of a whole reply."""
    kind = r.query["kind"]
    extra = {
        "nested": b"[" * 100_000 + b"]" * 100_000,
        "bigint": b"1" * 5000,
        "nan": b"NaN",
    }[kind]
    if r.query.get("as") == "event":
        data = b'{"finish_reason": "stop", "extra": ' + extra + b"}"
        await r.send(head(200, SSE_HEADERS))
        await r.send(chunk(sse("delta", {"text": "ok"})))
        await r.send(chunk(b"event: done\r\ndata: " + data + b"\r\n\r\n") + b"0\r\n\r\n")
        return
    await r.reply(200, b'{"prompt": "ok", "extra": ' + extra + b"}")


@behaviour("surrogate")
async def _surrogate(r: Request) -> None:
    """A reply holding a lone surrogate, valid JSON (``"\\ud800"``) that no encoding can
    print; ``?as=event`` as a stream's delta."""
    text = "before \ud800 after"
    if r.query.get("as") == "event":
        await r.send(head(200, SSE_HEADERS))
        await r.send(chunk(sse("delta", {"text": text})))
        await r.send(chunk(sse("done", {"finish_reason": "stop"})) + b"0\r\n\r\n")
        return
    await r.reply_json(200, {"prompt": text, "finish_reason": "stop"})


@behaviour("openai-finish")
async def _openai_finish(r: Request) -> None:
    """An OpenAI-compatible server whose ``finish_reason`` is ``?kind=list`` or ``object``
    (unhashable), whole or streamed as the request asks."""
    reason: Any = ["stop"] if r.query["kind"] == "list" else {"why": "stop"}
    streamed = json.loads(r.body or b"{}").get("stream") is True
    if not streamed:
        choice = {"index": 0, "text": "ok", "message": {"role": "assistant", "content": "ok"}}
        await r.reply_json(200, {"choices": [{**choice, "finish_reason": reason}]})
        return
    await r.send(head(200, SSE_HEADERS))
    for reason_now, text in ((None, "ok"), (reason, "")):
        choice = {"index": 0, "text": text, "delta": {"content": text}}
        data = json.dumps({"choices": [{**choice, "finish_reason": reason_now}]})
        await r.send(chunk(f"data: {data}\r\n\r\n".encode()))
    await r.send(chunk(b"data: [DONE]\r\n\r\n") + b"0\r\n\r\n")


HUGE_MESSAGE_MIB = 20


@behaviour("huge-error")
async def _huge_error(r: Request) -> None:
    """A 400 whose JSON error message is 20 MiB (both wires read this shape)."""
    message = "m" * (HUGE_MESSAGE_MIB << 20)
    await r.reply_json(400, {"error": {"type": "invalid_request", "message": message}})


METRICS_OK = "# TYPE promptwire_requests_total counter\npromptwire_requests_total 3\n"


@behaviour("status-odd")
async def _status_odd(r: Request) -> None:
    """What ``promptwire status`` reads, gone wrong, at ``/status-odd/<id>/<kind>/``
    (``status`` adds ``health`` and ``metrics``): ``nested`` /health, ``not-prometheus``,
    ``nan`` or ``inf`` values, a ``huge`` (200 MB) or ``dripped`` /metrics, a
    ``dripped-health``."""
    kind = r.path.strip("/").split("/")[2]
    health = b'{"status": "ok", "model": "m", "protocol": "1.2"}'
    if r.path.endswith("/health"):
        if kind == "nested":
            health = b'{"status": "ok", "model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        if kind == "dripped-health":  # 30 s of drip at the least
            health = health[:-1] + b" " * 600 + b"}"
            await _drip_bytes(r, head(200, {"Content-Length": str(len(health))}) + health)
            return
        await r.reply(200, health)
        return
    if kind == "huge":
        size = 200 << 20
        await r.send(head(200, {"Content-Type": "text/plain", "Content-Length": str(size)}))
        line = b"# padding of a very long exposition\n"
        block = line * ((1 << 20) // len(line))
        sent = 0
        while sent < size:
            piece = block[: size - sent]
            await r.send(piece)
            sent += len(piece)
        return
    text = {
        "nested": METRICS_OK,
        "not-prometheus": "<html><body>this { is not prometheus</body></html>\n",
        "nan": "# TYPE promptwire_requests_in_flight gauge\npromptwire_requests_in_flight NaN\n"
        + "# TYPE promptwire_requests_total counter\npromptwire_requests_total NaN\n",
        "inf": "# TYPE promptwire_requests_in_flight gauge\npromptwire_requests_in_flight +Inf\n"
        + "# TYPE promptwire_requests_total counter\npromptwire_requests_total +Inf\n",
        "dripped": METRICS_OK + "# padding\n" * 60,  # 30 s of drip
    }[kind].encode()
    if kind == "dripped":
        await r.send(head(200, {"Content-Type": "text/plain", "Content-Length": str(len(text))}))
        await _drip_bytes(r, text)
        return
    await r.reply(200, text, content_type="text/plain")


class FaultServer:
    """The server, run by its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.methods: dict[str, list[str]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.arrivals: dict[str, float] = {}  # path: when its first request arrived (monotonic)
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def start(self) -> FaultServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=30)
        return self

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, name: str, **query: Any) -> str:
        """A fresh URL of behaviour ``name`` whose requests are counted apart from all others."""
        if name not in BEHAVIOURS:
            raise KeyError(name)
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"http://127.0.0.1:{self.port}/{name}/{next(self._ids)}" + (f"?{qs}" if qs else "")

    def count(self, url: str) -> int:
        """Requests received so far at ``url``'s path."""
        return self.counts[urlsplit(url).path]

    def headers_of(self, url: str) -> list[dict[str, str]]:
        """The headers (names in lower case) of the requests received at ``url``'s path."""
        return list(self.headers.get(urlsplit(url).path, []))

    def first_arrival(self, url: str) -> float | None:
        """When the first request at ``url``'s path or below it arrived (``time.monotonic``):
        where a client's own deadline starts, after its interpreter's start-up."""
        root = urlsplit(url).path.rstrip("/")
        times = [t for path, t in self.arrivals.items() if path.startswith(root)]
        return min(times, default=None)

    def methods_of(self, url: str) -> list[str]:
        """The methods of the requests received at ``url``'s path, in order."""
        return list(self.methods.get(urlsplit(url).path, []))

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,  # the server is stopping
            TimeoutError,
        ):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        request_line, *header_lines = raw.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        parts = urlsplit(target)
        self.counts[parts.path] += 1
        self.arrivals.setdefault(parts.path, time.monotonic())
        self.methods.setdefault(parts.path, []).append(method)
        self.headers.setdefault(parts.path, []).append(headers)
        name = parts.path.strip("/").split("/")[0]
        request = Request(
            method=method,
            path=parts.path,
            query=dict(parse_qsl(parts.query)),
            headers=headers,
            body=body,
            count=self.counts[parts.path],
            reader=reader,
            writer=writer,
        )
        handler = BEHAVIOURS.get(name)
        if handler is None:
            await request.reply_json(404, {"error": {"type": "not_found", "message": target}})
            return
        await handler(request)


@contextmanager
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()
