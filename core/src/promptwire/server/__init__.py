"""The server side: one ASGI app for any engine, run by uvicorn here or by Modal in the cloud.

Importing this package needs the ``server`` extra (FastAPI, uvicorn, sse-starlette).
"""

from promptwire.server.app import create_app
from promptwire.server.runner import BackgroundServer, run_server

__all__ = ["BackgroundServer", "create_app", "run_server"]
