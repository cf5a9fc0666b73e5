"""Real servers on loopback for tests: the promptwire app around an engine, or any ASGI app."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from promptwire.engine import Engine
from promptwire.server import BackgroundServer, create_app


@contextmanager
def serve_engine(engine: Engine, **app_options: Any) -> Iterator[BackgroundServer]:
    """``create_app(engine, **app_options)`` under uvicorn on a free 127.0.0.1 port."""
    with BackgroundServer(create_app(engine, **app_options)) as server:
        yield server


@contextmanager
def serve_asgi(app: Any) -> Iterator[BackgroundServer]:
    """Any ASGI app (for example a deliberately misbehaving one) under uvicorn."""
    with BackgroundServer(app) as server:
        yield server


#: The sockets that hold ``refused_url``'s ports, for the rest of the test run.
_HELD: list[socket.socket] = []


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once. Its port stays
    bound (never listening) for the rest of the run, so no other server, of this run or of
    another program, can take it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/"
