"""Servers the benchmarks start in their own process, besides ``promptwire serve`` itself.

- ``bare``: a plain FastAPI app doing the dummy engine's work (a pydantic body, the engine's
  ``complete``, a dict returned; with ``"stream": true``, the engine's ``generate`` as the
  protocol's ``delta`` and ``done`` events through sse-starlette's ``EventSourceResponse``),
  with none of the protocol's checks, limits or disconnect handling: the baseline for the
  server benchmark, on uvicorn's HTTP parser ``--http`` (``h11``, or ``httptools``).
- ``tls``: the promptwire app around the dummy engine (echo) under uvicorn with TLS.
- ``stack``: the promptwire app as ``promptwire serve`` runs it (its guarded protocol on its
  default parser, and its limits) on the event loop ``--loop`` names (``asyncio`` or ``uvloop``).

Run: ``python -m benchmarks.servers bare --port P [--http httptools]`` or
``python -m benchmarks.servers tls --port P --certfile C --keyfile K``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from sse_starlette import EventSourceResponse, ServerSentEvent

HOST = "127.0.0.1"


class Body(BaseModel):
    """The bare app's request body."""

    model_config = ConfigDict(extra="allow")
    prompt: str
    max_tokens: int | None = None
    stream: bool = False


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def bare_app() -> Any:
    """FastAPI, written the way its tutorial shows, serving the same engine."""
    from fastapi import FastAPI
    from promptwire.engine import Finish, TextChunk
    from promptwire.protocol import PromptRequest
    from promptwire_modal_dummy.engine import DummyEngine
    from promptwire_modal_dummy.settings import DummySettings
    from sse_starlette import EventSourceResponse, ServerSentEvent

    engine = DummyEngine(DummySettings())
    app = FastAPI()

    async def events(request: PromptRequest) -> AsyncIterator[ServerSentEvent]:
        """The engine's stream as the protocol's events, JSON written as pydantic would."""
        async for event in engine.generate(request):
            if isinstance(event, TextChunk):
                yield ServerSentEvent(_json({"text": event.text}), event="delta")
            elif isinstance(event, Finish):
                done = {
                    "finish_reason": event.finish_reason.value,
                    "usage": event.usage.model_dump(),
                    "model": engine.model_name,
                }
                yield ServerSentEvent(_json(done), event="done")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/", response_model=None)
    async def generate(body: Body) -> dict[str, Any] | EventSourceResponse:
        request = PromptRequest(prompt=body.prompt, max_tokens=body.max_tokens)
        if body.stream:
            return EventSourceResponse(events(request))
        completion = await engine.complete(request)
        return {
            "prompt": completion.text,
            "usage": completion.usage.model_dump(),
            "finish_reason": completion.finish_reason.value,
            "model": engine.model_name,
        }

    return app


def tls_app() -> Any:
    from promptwire.server import create_app
    from promptwire_modal_dummy.engine import DummyEngine
    from promptwire_modal_dummy.settings import DummySettings

    return create_app(DummyEngine(DummySettings(echo=True)))


def serve_stack(port: int, loop: str) -> None:
    """``promptwire serve``'s server (dummy backend) with the event loop chosen here."""
    from promptwire._logs import set_level
    from promptwire.cli import build_app
    from promptwire.server._runner import ConnectionLimits, _server, server_config
    from promptwire.settings import PromptwireSettings

    set_level("warning")  # as promptwire serve --log-level warning: no request log line

    app = build_app("modal_dummy", api_key=None, settings=PromptwireSettings())
    config = server_config(
        app, host=HOST, port=port, log_level="warning", limits=ConnectionLimits()
    )
    config.loop = loop
    _server(config).run()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made now with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["bare", "tls", "stack"])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--http", choices=["h11", "httptools"], default="h11")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    if args.kind == "stack":
        serve_stack(args.port, args.loop)
        return
    options: dict[str, Any] = {
        "host": HOST,
        "port": args.port,
        "log_level": "warning",
        "http": args.http,
    }
    if args.kind == "tls":
        options |= {"ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
    app = bare_app() if args.kind == "bare" else tls_app()
    uvicorn.run(app, timeout_graceful_shutdown=2, **options)


if __name__ == "__main__":
    main()
