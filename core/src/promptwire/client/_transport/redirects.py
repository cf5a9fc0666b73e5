"""What of a request may follow a redirect, decided before each request goes out.

The clients follow redirects themselves (Modal answers a long request with a 303 to its result):
httpx builds each next request (``Response.next_request``: the method a 303 turns into GET, the
body dropped, ``Authorization`` stripped off-origin) and this guard checks it first. Credentials
never cross origins (RFC 9110), and a 307/308 to another origin, which would re-send the prompt
there, is refused. Following by hand rather than from httpx's request hook lets the same guard
hold for an ``httpx.Client`` the user passes in, whose hooks are the user's.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from promptwire.errors import ProtocolError


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


class RedirectGuard:
    """Checks every request of a redirect chain against the endpoint's origin."""

    def __init__(self, endpoint: httpx.URL, credential_headers: Sequence[str], shown: str) -> None:
        self._origin = origin(endpoint)
        self._credentials = list(credential_headers)
        self._shown = shown

    def check(self, request: httpx.Request) -> None:
        """Let ``request`` go to the endpoint's origin as it is; to another origin, only as a
        GET or HEAD and without credentials; else raise ``ProtocolError``."""
        if origin(request.url) == self._origin:
            return
        if request.method not in ("GET", "HEAD"):  # a 307/308 would send the prompt there too
            shown = request.url.copy_with(
                path="/", query=None, fragment=None, username=None, password=None
            )
            raise ProtocolError(
                f"refused a redirect to another origin ({shown}) that would send the request "
                "body there",
                url=self._shown,
            )
        for name in self._credentials:
            request.headers.pop(name, None)
