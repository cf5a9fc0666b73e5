"""The HTTP client of the prompt endpoint protocol: pooled, timed, retried where safe, typed errors.

``EndpointClient`` puts together a sync and an async client for one endpoint (the I/O shells in
``promptwire.client._transport``, which share everything but the awaits). It follows Modal's 303
redirect for long requests, honours ``Retry-After``, and only repeats a request when the server
cannot have run it (connection never made, 429, 503) unless ``retry_unsafe`` is set. The protocol
is stateless, so no cookie is kept or sent.

**Bringing your own httpx client.** ``http_client`` (an ``httpx.Client``) and
``http_async_client`` (an ``httpx.AsyncClient``, such as ``httpx_aiohttp.HttpxAiohttpClient``)
replace promptwire's own connection pools, for proxies, mTLS, a custom transport or an app served
in-process (``httpx.ASGITransport``). The client keeps its transport and what it configures
there (proxy, certificates, ``verify``, connection limits, HTTP/2), its default headers, its
``auth`` (run on the first request of each call, not on redirects, as httpx does) and its event
hooks. promptwire adds, on every request: its own headers over the client's (``User-Agent``,
``Accept``, ``Accept-Encoding``, the credentials, the backend's headers, ``X-Request-ID``), its
``timeout``/``connect_timeout`` instead of the client's, its deadlines for a whole reply and
between the events of a stream, its retries (on top of any the transport does), bounded reading
of replies, and its redirect handling: redirects are followed by promptwire whatever the client's
``follow_redirects``, through the guard that keeps credentials and request bodies on the
endpoint's origin. Cookies from the client's jar are never sent; httpx may still store a cookie
the endpoint sets in that jar. promptwire never closes a client it was given. An
``httpx.AsyncClient``'s connections belong to the event loop that opened them: use a given async
client from one loop (promptwire's own pools are per loop).
"""

from promptwire.client._endpoint_client import EndpointClient
from promptwire.client._transport.config import (
    ClientConfig,
    check_header_secret,
    parse_endpoint_url,
)
from promptwire.client._transport.errors import StaleConnectionError
from promptwire.client._transport.exchange import REQUEST_ID_HEADER
from promptwire.client._transport.retry import MAX_RETRY_AFTER
from promptwire.client.wire import StreamEvent, parse_json
from promptwire.settings import MAX_REPLY_BYTES

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_RETRY_AFTER",
    "REQUEST_ID_HEADER",
    "ClientConfig",
    "EndpointClient",
    "StaleConnectionError",
    "StreamEvent",
    "check_header_secret",
    "parse_endpoint_url",
    "parse_json",
]
