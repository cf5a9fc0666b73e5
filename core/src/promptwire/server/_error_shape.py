"""Which protocol's shape an error the app's shared layers answer takes: the guard's 400s and
last-resort 500, auth's 401, 404 and 405 for an unknown path or method, the body's 408, 413 and
415, the slots' 503. Each is written where it is made, in the shape of the protocol whose path
the request was for (OpenAI's on ``/v1``, Anthropic's on ``/v1/messages``), else in the prompt
protocol's; a request that is answered without an error pays nothing for it."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import Scope

from promptwire.server._app_route import route_path

#: ``(status, the prompt protocol's error type, message, the request's id)`` -> the protocol's
#: error body.
ErrorShape = Callable[[int, str, str, str | None], bytes]


def add_error_shape(app: FastAPI, prefix: str, shape: ErrorShape) -> None:
    """Answer the shared layers' errors on ``prefix`` (the path itself and those under it) in
    the shape ``shape`` writes; of two prefixes that hold a path, the longer one's shape."""
    shapes: dict[str, ErrorShape] | None = getattr(app.state, "error_shapes", None)
    if shapes is None:
        shapes = app.state.error_shapes = {}
    shapes[prefix] = shape


def error_shape(scope: Scope) -> ErrorShape | None:
    """The shape of errors on the path ``scope`` is for; None: the prompt protocol's."""
    state = getattr(scope.get("app"), "state", None)
    shapes: dict[str, ErrorShape] | None = getattr(state, "error_shapes", None)
    if not shapes:
        return None
    path = route_path(scope)
    found: tuple[int, ErrorShape] | None = None
    for prefix, shape in shapes.items():
        if (path == prefix or path.startswith(prefix + "/")) and (
            found is None or len(prefix) > found[0]
        ):
            found = (len(prefix), shape)
    return None if found is None else found[1]
