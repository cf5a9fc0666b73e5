"""The app tries its routes in order, each one it passes costing a route match: the generating
routes come first, in ``GENERATING_ROUTES``' order (benchmark 8 measures what that saves)."""

from __future__ import annotations

from promptwire.server import create_app
from promptwire.server._app import GENERATING_ROUTES
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
