"""The app's routes (``AppRoute``): tried in order, each one a request passes costing a route
match, the generating routes first, in ``GENERATING_ROUTES``' order (benchmark 8 measures what
that saves); a route turns away another route's request at once, as FastAPI would after its
full match; and an endpoint that takes only the request is called without FastAPI's
dependency solving, any other as FastAPI calls it."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from promptwire.server import create_app
from promptwire.server._app import GENERATING_ROUTES
from promptwire.server._app_route import AppRoute
from promptwire_modal_dummy.engine import DummyEngine
from starlette.responses import Response
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
    """The shortcut of ``AppRoute`` turns away only what FastAPI's match turns away."""
    app = create_app(DummyEngine())
    routes = [route for route in app.router.routes if isinstance(route, APIRoute)]
    assert routes and all(isinstance(route, AppRoute) for route in routes)
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


def test_the_endpoints_that_take_only_the_request_skip_fastapis_handler() -> None:
    routes = {
        (route.path, *sorted(route.methods or ())): route
        for route in create_app(DummyEngine()).router.routes
        if isinstance(route, AppRoute)
    }
    direct = {key for key, route in routes.items() if route.endpoint_takes_only_the_request()}
    assert {(path, "POST") for path in GENERATING_ROUTES} <= direct
    # /health takes nothing, /v1/models/{name} its path's parameter: FastAPI's own handler.
    assert not {("/health", "GET"), ("/v1/models/{name:path}", "GET")} & direct


def test_fastapi_calls_an_endpoint_that_needs_more_than_the_request() -> None:
    app = FastAPI()
    app.router.route_class = AppRoute

    async def only(request: Request) -> Response:
        return Response(request.url.path)

    async def with_query(request: Request, size: int = 1) -> Response:
        return Response(str(size))

    def synchronous(request: Request) -> Response:
        return Response("sync")

    async def checked(request: Request) -> Response:
        return Response("checked")

    async def serialized(request: Request) -> dict[str, int]:
        return {"answer": 42}

    def refuse() -> None:
        raise HTTPException(403, "no")

    app.post("/only")(only)
    app.post("/query")(with_query)
    app.post("/sync")(synchronous)
    app.post("/checked", dependencies=[Depends(refuse)])(checked)
    app.post("/created", status_code=201)(only)
    app.post("/serialized")(serialized)
    routes = {route.path: route for route in app.router.routes if isinstance(route, AppRoute)}
    assert routes["/only"].endpoint_takes_only_the_request()
    for path in ("/query", "/sync", "/checked", "/created", "/serialized"):
        assert not routes[path].endpoint_takes_only_the_request(), path
    client = TestClient(app)
    assert client.post("/only").text == "/only"
    assert client.post("/query?size=7").text == "7"
    assert client.post("/query?size=x").status_code == 422  # FastAPI's validation still runs
    assert client.post("/checked").status_code == 403  # and the dependency
    assert client.post("/sync").text == "sync"
    assert client.post("/serialized").json() == {"answer": 42}  # FastAPI's serialization
