"""The app's route class, which skips the per-request work of FastAPI's that its routes do not
use, and the path a request is for as the routes see it (``route_path``).

Every route of the app takes the request and answers a ``Response`` it builds itself: no
parameters to validate, no dependencies, no response model to serialize (the prompt route's
``response_model`` documents its reply in the OpenAPI schema). Two shortcuts, each doing what
FastAPI would do, cheaper (``python -m benchmarks.route_cost --bytecodes``):

- **Matching.** The router tries its routes in order (``GENERATING_ROUTES`` first), and every
  route a request passes on its way to its own cost it that route's full match: FastAPI's
  route context, the scope's root path, a regular expression (about 80 bytecodes; the
  shortcut's refusal, 14). A route whose path has no parameters turns away a request for
  another path with one ``str.endswith``.
- **Calling.** FastAPI's handler solves the endpoint's dependencies (parsing the query string
  among them) inside two exit stacks for dependencies with ``yield``, then calls it: about 700
  bytecodes a request, for an endpoint that takes only the request. Such an endpoint is
  called as Starlette calls its own routes' (``starlette.routing.request_response``: the
  request made, the endpoint awaited, its response sent, exceptions to the app's handlers).
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, request_response
from starlette.types import Scope


class AppRoute(APIRoute):
    """An ``APIRoute`` with the two shortcuts; a route they do not fit is FastAPI's own.

    Matching: a path that is the route's own ends with it (the path the route sees is the
    request's path less the app's root path). Starlette's pattern (``^/v1/messages$``) also
    takes the path with one newline after it (``%0A``), so that ending is let through too, to
    the full match: the shortcut turns away only what the full match would.

    Calling: only for an endpoint whose one parameter is the ``Request`` and which is declared
    to return a ``Response``, with no dependencies (the route's or its router's) and no status
    code of FastAPI's to apply; ``endpoint_takes_only_the_request`` says which."""

    def __init__(self, path: str, endpoint: Any, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        # Every path ends with "": a route with parameters always goes on to the full match.
        self._endings = ("",) if self.param_convertors else (self.path, self.path + "\n")
        if self.endpoint_takes_only_the_request():
            self.app = request_response(self.endpoint)

    def endpoint_takes_only_the_request(self) -> bool:
        try:
            signature = inspect.signature(self.endpoint, eval_str=True)
        except NameError:  # an annotation that names what its module does not hold
            return False
        parameters = list(signature.parameters.values())
        answers = signature.return_annotation
        return (
            len(parameters) == 1
            and parameters[0].annotation is Request
            # What it returns is sent as it is: FastAPI would serialize anything else.
            and isinstance(answers, type)
            and issubclass(answers, Response)
            and inspect.iscoroutinefunction(self.endpoint)
            and not self.dependencies
            and self.status_code is None
        )

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
