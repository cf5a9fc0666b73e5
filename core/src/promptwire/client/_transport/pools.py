"""The httpx clients promptwire makes: stateless, and for async calls, several per event loop.

Every client promptwire makes for an endpoint carries its headers and timeouts, shares the one
SSL context of the process (``shared_ssl_context``: loading the CAs takes about 23 ms and 0.8
MiB, which a router of hundreds of members paid per member) and keeps no cookies: the protocol
is stateless, and one caller's cookies must not ride along on another's requests. A client the
user passes in is used as it is (see ``promptwire.client``).

httpcore's connection pool rescans all its connections several times per request (work quadratic
in its size; encode/httpcore#1035): at 64 requests in flight that costs more CPU than the
requests. Concurrent async requests are therefore spread over pools of at most
``CONNECTIONS_PER_POOL`` connections (benchmark 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx

from promptwire.client._transport.config import ClientConfig
from promptwire.client._transport.forks import ForkSafeLock, generation

CONNECTIONS_PER_POOL = 8

# Clients are made on first use, which can come from many threads at once (a batch).
_MAKING = ForkSafeLock()
_SSL: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """The SSL context of every client promptwire makes, in every thread: the default one (the
    CAs of certifi, or of ``SSL_CERT_FILE``/``SSL_CERT_DIR``), made once, when the first client
    is. An ``http://`` endpoint's client holds it too, for a redirect to ``https://``."""
    global _SSL
    with _MAKING:
        if _SSL is None:
            _SSL = httpx.create_ssl_context()
        return _SSL


class _RefusingJar(CookieJar):
    """A cookie jar that stores nothing, whoever asks."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None


class _NoCookies(httpx.Cookies):
    """Cookies that are never stored, and replies not even looked at for them.

    httpx hands every reply to its client's ``cookies.extract_cookies``, which wraps the request
    and the reply in urllib adapters (re-parsing the URL, copying the headers) before any jar can
    refuse them: about a tenth of httpx's client CPU for a local request (benchmark 3).
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _NoCookies(_RefusingJar())  # shared by every client: it is always empty


class _Stateless:
    """Mixed into promptwire's own httpx clients to take their cookies away: httpx wraps a
    ``cookies=`` argument in a plain ``httpx.Cookies``, so only the property can."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise AttributeError("promptwire's endpoint clients keep no cookies")


class _StatelessClient(_Stateless, httpx.Client):
    pass


class _StatelessAsyncClient(_Stateless, httpx.AsyncClient):
    pass


def stateless_async_client(**options: Any) -> httpx.AsyncClient:
    """An async httpx client that keeps no cookies, over the process's SSL context (what
    ``promptwire status`` reads endpoints with: one member's cookies never reach another)."""
    return _StatelessAsyncClient(verify=shared_ssl_context(), **options)


class ClientOptions:
    """The keyword arguments of every httpx client made for one endpoint."""

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._headers = config.request_headers()

    def __call__(self, max_connections: int) -> dict[str, Any]:
        return {
            "headers": self._headers,
            "timeout": self._config.httpx_timeout(),
            "limits": httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            "follow_redirects": False,  # followed by the clients, through the redirect guard
            "verify": shared_ssl_context(),
        }


class AsyncPools:
    """Async httpx clients sharing one endpoint's connections, at most ``CONNECTIONS_PER_POOL``
    each (made on first use). A request takes the one with the most free connections, the first
    among equals, so sequential calls always reuse the first pool's connection and no request
    waits for a connection while another pool has one free."""

    def __init__(self, options: ClientOptions, max_connections: int) -> None:
        full, rest = divmod(max(1, max_connections), CONNECTIONS_PER_POOL)
        self._sizes = [CONNECTIONS_PER_POOL] * full + ([rest] if rest else [])
        self._options = options
        self._clients: list[httpx.AsyncClient | None] = [None] * len(self._sizes)
        self._busy = [0] * len(self._sizes)

    def client(self, index: int) -> httpx.AsyncClient:
        client = self._clients[index]
        if client is None:
            client = self._clients[index] = _StatelessAsyncClient(
                **self._options(self._sizes[index])
            )
        return client

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        free = [size - busy for size, busy in zip(self._sizes, self._busy, strict=True)]
        index = free.index(max(free))
        self._busy[index] += 1
        try:
            yield self.client(index)
        finally:
            self._busy[index] -= 1

    async def aclose(self) -> None:
        clients, self._clients = self._clients, [None] * len(self._sizes)
        for client in clients:
            if client is not None:
                await client.aclose()


class PoolsPerLoop:
    """The ``AsyncPools`` of each running event loop.

    An asyncio connection can only be used, and closed, by the loop that opened it, and one model
    object is used from many loops: ``asyncio.run`` after ``asyncio.run`` in a script or a test
    suite, a thread per loop in a web app, a notebook's loop beside them. Each loop gets its own
    pools, found by one identity check on the hot path. They are closed when their loop shuts
    down (``asyncio.run`` and ``loop.shutdown_asyncgens()`` close the async generators a loop
    started, and one of those holds them); the pools of a loop closed without shutting down are
    dropped at the next pools made (their sockets closed as the loop left them).

    When the model object goes away first (one made per request, in a web app), each running
    loop's pools are closed on that loop, as ``aclose`` would. They are never left to the garbage
    collector: collecting them in a cycle runs asyncio's transport finalizer, which closes each
    socket behind its loop's back; the file descriptor numbers were then taken by new
    connections (any client's, in the same process), and the transports' later close removed
    those connections' readers from the loop: their replies arrived and were never read.
    """

    def __init__(self, make: Callable[[], AsyncPools]) -> None:
        self._make = make
        self._start()

    def _start(self) -> None:
        """No pools yet, in this process (a forked child drops its parent's, unclosed: see
        ``promptwire.client._transport.forks``)."""
        self._by_loop: dict[asyncio.AbstractEventLoop, _LoopPools] = {}
        self._last: _LoopPools | None = None  # the last one used: the single-loop fast path
        # Several threads' loops may make pools at once; re-entrant because dropping a closed
        # loop's pools ends their closer, which forgets them.
        self._lock = threading.RLock()
        self._generation = generation()
        # Holds the pools (not this object) until this object is collected, then closes them.
        self._finalizer = weakref.finalize(self, _close_soon, self._by_loop, self._lock)

    def current(self) -> AsyncPools:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last.loop is loop and self._generation == generation():
            return last.pools
        if self._generation != generation():  # a forked child: the pools are the parent's
            inherited = list(self._by_loop.values())
            self._finalizer.detach()
            self._start()  # first: a lock held at the fork stays held
            for pools in inherited:
                pools.disown()
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is None:
                self._drop_closed_loops()
                forget = weakref.WeakMethod(self._forget)  # no cycle back to this object
                entry = self._by_loop[loop] = _LoopPools(loop, self._make(), forget)
            self._last = entry
        return entry.pools

    async def aclose_current(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
        if entry is not None:
            await entry.pools.aclose()

    def _forget(self, entry: _LoopPools) -> None:
        with self._lock:
            if self._by_loop.get(entry.loop) is entry:
                del self._by_loop[entry.loop]
            if self._last is entry:
                self._last = None

    def _drop_closed_loops(self) -> None:
        for entry in [e for e in self._by_loop.values() if e.loop.is_closed()]:
            del self._by_loop[entry.loop]
            entry.abandon()
        if self._last is not None and self._last.loop.is_closed():
            self._last = None


class _LoopPools:
    """One loop's pools, and the async generator that closes them when the loop shuts down."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pools: AsyncPools,
        forget: Callable[[], Callable[[_LoopPools], None] | None],
    ) -> None:
        self.loop = loop
        self.pools = pools
        self._forget = forget
        self._owned = True  # False in a forked child: the connections are its parent's
        # Started here, in the loop's thread, so the loop registers it (its first-iteration
        # hook) and closes it in ``shutdown_asyncgens``; it runs to its ``yield`` at once.
        self._closer = self._close_at_shutdown()
        with contextlib.suppress(StopIteration):
            self._closer.__anext__().send(None)

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if (forget := self._forget()) is not None:
                forget(self)
            if self._owned and not self.loop.is_closed():
                await self.pools.aclose()

    def close_soon(self) -> None:
        """Close the pools on their loop, from any thread (the loop still running)."""

        def close() -> None:
            task = self.loop.create_task(self._closer.aclose())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)

        if self.loop.is_closed():
            self.abandon()
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile: it closed them
            self.loop.call_soon_threadsafe(close)

    def disown(self) -> None:
        """In a forked child: never close these pools (closing a TLS connection writes to the
        socket the parent still uses); ended as ``abandon`` ends them."""
        self._owned = False
        self.abandon()

    def abandon(self) -> None:
        """The loop closed without shutting down: end the closer without awaiting anything (its
        loop cannot run it), so it is not handed to that closed loop when collected."""
        with contextlib.suppress(StopIteration, RuntimeError):
            self._closer.aclose().send(None)


#: The closings under way (a task the loop alone refers to may be collected before it ends).
_CLOSING: set[asyncio.Task[None]] = set()


def _close_soon(
    by_loop: dict[asyncio.AbstractEventLoop, _LoopPools], lock: threading.RLock
) -> None:
    """A ``PoolsPerLoop`` was collected: close each loop's pools on that loop."""
    with lock:
        entries = list(by_loop.values())
        by_loop.clear()
    for entry in entries:
        entry.close_soon()


def make_client(options: ClientOptions, max_connections: int) -> httpx.Client:
    """The sync client: one pool for the whole endpoint (threads share it)."""
    return _StatelessClient(**options(max_connections))
