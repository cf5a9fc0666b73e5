"""The app's routes, each turning away a request for another path with one string comparison,
and the path a request is for as they see it (``route_path``).

The router tries its routes in order (``GENERATING_ROUTES`` first), and every route a request
passes on its way to its own costs it that route's full match: FastAPI's route context, the
scope's root path, a regular expression (about 80 bytecodes, ``python -m
benchmarks.route_cost --bytecodes``; the shortcut's refusal, 14). The fifth generating route
paid four of them."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope


class ExactPathRoute(APIRoute):
    """An ``APIRoute`` that, when its path has no parameters, refuses at once a request whose
    path cannot be its own; any other is matched as ``APIRoute`` matches it.

    A path that is its own ends with it: the path the route sees is the request's path less the
    app's root path. Starlette's pattern (``^/v1/messages$``) also takes the path with one
    newline after it (``%0A``), so that ending is let through too, to the full match: the
    shortcut turns away only what the full match would."""

    def __init__(self, path: str, endpoint: Any, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        # Every path ends with "": a route with parameters always goes on to the full match.
        self._endings = ("",) if self.param_convertors else (self.path, self.path + "\n")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Whatever the scope's type: the full match turns away another path as surely (and any
        # type but "http").
        if not scope["path"].endswith(self._endings):
            return Match.NONE, {}
        return super().matches(scope)


def route_path(scope: Scope) -> str:
    """The request's path as the app's routes see it: without the root path the app is served
    under (a prefix it is mounted at, uvicorn's ``--root-path``), as Starlette's router takes
    it off."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
