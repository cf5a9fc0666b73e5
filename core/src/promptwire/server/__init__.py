"""The server side: one ASGI app for any engine, run by uvicorn here or by Modal in the cloud.

Importing this package needs the ``server`` extra (FastAPI, uvicorn, sse-starlette).
"""

from promptwire.server._app import create_app
from promptwire.server._runner import (
    BackgroundServer,
    ConnectionLimits,
    loopback_host_names,
    run_server,
)
from promptwire.server._shutdown import GracefulShutdown, graceful_shutdown
from promptwire.server.observability import Observability

__all__ = [
    "BackgroundServer",
    "ConnectionLimits",
    "GracefulShutdown",
    "Observability",
    "create_app",
    "graceful_shutdown",
    "loopback_host_names",
    "run_server",
]
