"""The app tries its routes in order, each one it passes costing a route match: the generating
routes come first, in ``GENERATING_ROUTES``' order (benchmark 8 measures what that saves), and
a route turns away another route's request at once, as FastAPI would after its full match."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from promptwire.server import create_app
from promptwire.server._app import GENERATING_ROUTES
from promptwire.server._exact_route import ExactPathRoute
from promptwire_modal_dummy.engine import DummyEngine
from starlette.routing import Route


def test_the_generating_routes_are_tried_first_in_their_order() -> None:
    routes = create_app(DummyEngine()).router.routes
    first = [
        (route.path, sorted(route.methods or ()))
        for route in routes[: len(GENERATING_ROUTES)]
        if isinstance(route, Route)
    ]
    assert first == [(path, ["POST"]) for path in GENERATING_ROUTES]


def test_the_other_post_routes_come_before_the_reading_ones() -> None:
    routes = [r for r in create_app(DummyEngine()).router.routes if isinstance(r, Route)]
    posts = ["POST" in (route.methods or ()) for route in routes]
    assert posts == sorted(posts, reverse=True)
    assert {"/v1/messages/count_tokens", "/v1/responses/input_tokens"} <= {
        route.path for route, post in zip(routes, posts, strict=True) if post
    }


PATHS = [
    "/",
    "/v1/chat/completions",
    "/v1/chat/completions\n",  # Starlette's pattern takes one newline after the path
    "/v1/chat/completions\n\n",
    "/v1/chat/completions/",
    "/x/v1/chat/completions",
    "/v1/chat/completion",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/v1/models/dummy",
    "/health",
    "/api",
    "",
]


@pytest.mark.parametrize("root_path", ["", "/api", "/api/"])
def test_every_route_matches_as_fastapi_matches_it(root_path: str) -> None:
    """The shortcut of ``ExactPathRoute`` turns away only what FastAPI's match turns away."""
    app = create_app(DummyEngine())
    routes = [route for route in app.router.routes if isinstance(route, APIRoute)]
    assert routes and all(isinstance(route, ExactPathRoute) for route in routes)
    for route in routes:
        for path in PATHS:
            for kind, method in (("http", "POST"), ("http", "GET"), ("websocket", "GET")):
                scope = {
                    "type": kind,
                    "method": method,
                    "path": root_path.rstrip("/") + path,
                    "root_path": root_path,
                }
                expected = APIRoute.matches(route, dict(scope))
                assert route.matches(dict(scope)) == expected, (route.path, scope)
