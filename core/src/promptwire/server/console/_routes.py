"""``GET /console``: a page to try the model and watch the server, in the browser.

The page's shell (its HTML, script and style sheets, every file shipped in this package: no CDN,
no other origin) is served without the API key, so a person can open it and be asked for the
key; everything it shows comes from calls that need the key like any other route: ``/v1/models``
and ``/v1/chat/completions`` (streamed, cancelled by the page's Stop button as any client that
leaves cancels), and ``GET /console/stats`` (``_stats``: the server's own counters, about once a
second while the page is open and visible). ``/health`` is public already.

Every shell answer carries a strict Content-Security-Policy (no inline script or style, no other
origin to fetch from, post a form to or be framed by), ``Referrer-Policy: no-referrer`` and an
ETag; the page keeps the key in the tab's ``sessionStorage`` and sends it only as a bearer
header. ``PROMPTWIRE_CONSOLE=false`` leaves all of it out (404).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.server._state import ServingState
from promptwire.server.console._stats import stats

CONSOLE_PATH = "/console"
STATS_PATH = CONSOLE_PATH + "/stats"

#: Every answer of the console's shell: nothing but this origin's own files, no inline code, no
#: form posted anywhere, never in a frame.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SHELL_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-cache",
}

#: The shell: URL path -> (file under ``static/``, media type).
SHELL_FILES = {
    CONSOLE_PATH: ("index.html", "text/html; charset=utf-8"),
    CONSOLE_PATH + "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    CONSOLE_PATH + "/console.css": ("console.css", "text/css; charset=utf-8"),
    CONSOLE_PATH + "/uPlot.iife.min.js": (
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
    ),
    CONSOLE_PATH + "/uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
}
#: The paths served without the API key: the shell only, never a figure or a reply.
SHELL_PATHS = frozenset(SHELL_FILES)


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load(name: str, media_type: str) -> _Asset:
    body = resources.files(__package__).joinpath("static", *name.split("/")).read_bytes()
    return _Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def add_console_routes(app: FastAPI, state: ServingState) -> None:
    """Serve the console on ``app`` from ``state`` (see the module). The shell's files are read
    once, here; ``create_app`` leaves ``SHELL_PATHS`` open when the app has an API key."""
    for path, (name, media_type) in SHELL_FILES.items():
        app.add_api_route(
            path, _shell_endpoint(_load(name, media_type)), methods=["GET"], include_in_schema=False
        )
    engine = state.engine

    async def console_stats(request: Request) -> Response:
        figures = stats(
            getattr(request.app.state, "metrics", None),
            engine,
            state.serving(),
            (*SHELL_PATHS, STATS_PATH),
        )
        return Response(
            json.dumps(figures, separators=(",", ":")),
            media_type="application/json",
            headers={"cache-control": "no-store"},
        )

    app.add_api_route(STATS_PATH, console_stats, methods=["GET"], include_in_schema=False)


def _shell_endpoint(asset: _Asset) -> Any:
    headers = {**SHELL_HEADERS, "etag": asset.etag}

    async def shell(request: Request) -> Response:
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    return shell
