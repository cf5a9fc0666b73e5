"""Errors a promptwire user can catch, as one hierarchy (in the manner of httpx's exceptions).

PromptwireError
├── ConfigurationError          bad settings or an unknown backend
├── PluginError                 a plugin failed to load or registered something invalid
├── InvalidInputError           input that cannot be sent (text that is not valid Unicode)
└── EndpointError               anything that went wrong talking to an endpoint (has ``url``)
    ├── EndpointConnectError    the connection was refused or dropped before a reply
    ├── EndpointTimeoutError    no complete reply within the configured timeout
    ├── ProtocolError           a reply that does not follow the protocol (non-JSON, no ``prompt``)
    ├── StreamError             the server reported an error in the middle of a stream
    ├── AllEndpointsFailedError the ``router`` backend found no member able to take the call
    └── HTTPStatusError         a non-2xx answer (has ``status_code``, ``error_type``)
        ├── InvalidRequestError 400/404/405/422: the request itself is wrong
        ├── AuthenticationError 401/403
        ├── RequestTooLargeError 413, 431 (the body, or the request's headers)
        ├── RateLimitError      429
        ├── OverloadedError     503
        └── ServerError         other 5xx
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class PromptwireError(Exception):
    """Base class of every error promptwire raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its message and attributes, rebuilt without ``__init__`` (whose keyword
        # arguments pickle cannot pass): a process pool hands a worker's error back this way.
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type[PromptwireError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigurationError(PromptwireError):
    pass


class PluginError(PromptwireError):
    pass


class InvalidInputError(PromptwireError, ValueError):
    """The call's input cannot be sent as it is, so nothing was sent: text that is not valid
    Unicode (a lone surrogate, as ``"\\ud800"`` or a bad decode with ``surrogateescape``
    makes) has no UTF-8 form for the JSON body."""


def _without_query(url: str) -> str:
    """``url`` as errors show it: a token may ride in its query or fragment."""
    return url.partition("#")[0].partition("?")[0]


class EndpointError(PromptwireError):
    """``transient``: worth another try. ``may_have_run``: the server may have run the request,
    so repeating it is only done when the caller allows it (``retry_unsafe``). ``request_id``:
    the ``X-Request-ID`` of the (last) request the error is about, which a promptwire server
    logs; quote it to the endpoint's operator. None when no request went out."""

    request_id: str | None = None

    def __init__(
        self, message: str, *, url: str, transient: bool = False, may_have_run: bool = True
    ) -> None:
        url = _without_query(url)
        super().__init__(f"{message} ({url})")
        self.url = url
        """The endpoint's URL, without its query or fragment (a token may ride there)."""
        self.transient = transient
        self.may_have_run = may_have_run

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} [request {self.request_id}]" if self.request_id else text


class EndpointConnectError(EndpointError):
    pass


class EndpointTimeoutError(EndpointError):
    pass


class ProtocolError(EndpointError):
    pass


class UnsupportedFeatureError(EndpointError):
    """The endpoint cannot honour what the request asks for (tool calling or structured output
    from a server older than protocol 1.2); nothing was sent."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message, url=url, may_have_run=False)


class ReplyTooLargeError(ProtocolError):
    """A reply, or one event of a stream, is larger than ``max_reply_bytes`` once decoded."""


#: A stream's error types that say the server could not go on now, not that the request was
#: bad: the 503s of the protocol (§ 1.4). Such a ``StreamError`` is ``transient``.
_TRANSIENT_STREAM_ERRORS = frozenset({"overloaded", "not_ready", "shutting_down"})


class StreamError(EndpointError):
    """A stream ended by the server's ``error`` event; ``transient`` when its type says the
    server could not go on now (shutting down, overloaded), as the same answer's 503 would."""

    def __init__(self, message: str, *, url: str, error_type: str) -> None:
        super().__init__(
            f"stream failed: {error_type}: {message}",
            url=url,
            transient=error_type in _TRANSIENT_STREAM_ERRORS,
        )
        self.error_type = error_type


#: The most members an error about a router's members names in its message (``failures`` and
#: the like keep them all): a router of a thousand made 100 KB messages.
_SHOWN_MEMBERS = 5


def _shown_members(members: Sequence[str]) -> str:
    """The first ``_SHOWN_MEMBERS`` members, and how many there are in all."""
    if len(members) <= _SHOWN_MEMBERS:
        return ", ".join(members)
    return f"{', '.join(members[:_SHOWN_MEMBERS])}, … ({len(members)} members)"


def _shown_reasons(reasons: Mapping[str, str]) -> str:
    """Why each of the first ``_SHOWN_MEMBERS`` members failed, and how many more did."""
    shown = "; ".join(f"{member}: {why}" for member, why in list(reasons.items())[:_SHOWN_MEMBERS])
    more = len(reasons) - _SHOWN_MEMBERS
    return f"{shown}; and {more} more" if more > 0 else shown


class AllEndpointsFailedError(EndpointError):
    """Every member of a ``router`` backend failed or is cooling down, or the call's time ran
    out. ``failures`` maps each member (its URL without query or credentials) to why it could
    not take the call; the message names the first few."""

    def __init__(self, failures: dict[str, str], *, may_have_run: bool) -> None:
        super().__init__(
            f"no endpoint could take the call: {_shown_reasons(failures)}",
            url=_shown_members(list(failures)),
            transient=True,
            may_have_run=may_have_run,
        )
        self.failures = dict(failures)


class HTTPStatusError(EndpointError):
    def __init__(
        self,
        message: str,
        *,
        url: str,
        status_code: int,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        label = f"HTTP {status_code}" + (f" {error_type}" if error_type else "")
        super().__init__(
            f"{label}: {message}",
            url=url,
            transient=status_code in (429, 502, 503, 504),
            may_have_run=status_code not in (429, 503),
        )
        self.status_code = status_code
        self.error_type = error_type
        self.retry_after = retry_after
        #: The whole body of the answer, decoded, the client's secrets replaced: the message
        #: holds at most its first thousand characters.
        self.body: str | None = None


class InvalidRequestError(HTTPStatusError):
    pass


class AuthenticationError(HTTPStatusError):
    pass


class RequestTooLargeError(HTTPStatusError):
    pass


class RateLimitError(HTTPStatusError):
    pass


class OverloadedError(HTTPStatusError):
    pass


class ServerError(HTTPStatusError):
    pass


def status_error_class(status_code: int) -> type[HTTPStatusError]:
    """The most specific error class for a non-2xx status."""
    if status_code in (401, 403):
        return AuthenticationError
    if status_code in (413, 431):
        return RequestTooLargeError
    if status_code == 429:
        return RateLimitError
    if status_code == 503:
        return OverloadedError
    if status_code >= 500:
        return ServerError
    if 400 <= status_code < 500:
        return InvalidRequestError
    return HTTPStatusError


__all__ = [
    "AllEndpointsFailedError",
    "AuthenticationError",
    "ConfigurationError",
    "EndpointConnectError",
    "EndpointError",
    "EndpointTimeoutError",
    "HTTPStatusError",
    "InvalidInputError",
    "InvalidRequestError",
    "OverloadedError",
    "PluginError",
    "PromptwireError",
    "ProtocolError",
    "RateLimitError",
    "ReplyTooLargeError",
    "RequestTooLargeError",
    "ServerError",
    "StreamError",
    "UnsupportedFeatureError",
    "status_error_class",
]
