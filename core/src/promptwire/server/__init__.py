"""The server side: one ASGI app for any engine, run by uvicorn here or by Modal in the cloud.

Importing this package needs the ``server`` extra (FastAPI, uvicorn, sse-starlette).
"""

from promptwire.server._app import LimitArguments, create_app, server_limits
from promptwire.server._from_settings import app_from_settings
from promptwire.server._runner import BackgroundServer, loopback_host_names, run_server
from promptwire.server._shutdown import GracefulShutdown, graceful_shutdown
from promptwire.server.observability import Observability
from promptwire.settings import ConnectionLimits, ServerLimits

__all__ = [
    "BackgroundServer",
    "ConnectionLimits",
    "GracefulShutdown",
    "LimitArguments",
    "Observability",
    "ServerLimits",
    "app_from_settings",
    "create_app",
    "graceful_shutdown",
    "loopback_host_names",
    "run_server",
    "server_limits",
]
