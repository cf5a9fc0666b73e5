"""Network marks for tests that talk to real servers on 127.0.0.1.

``langchain-tests`` brings pytest-socket and pytest-recording, which can block sockets
(``--disable-socket``, ``--block-network``). ``LOOPBACK_ONLY`` keeps loopback open under either
option and blocks every other host even in a plain run, so these tests provably stay on this
machine.
"""

from __future__ import annotations

import socket

import pytest

LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]

LOOPBACK_ONLY = [
    pytest.mark.enable_socket,
    pytest.mark.block_network(allowed_hosts=LOOPBACK_HOSTS),
]


def free_port() -> int:
    """A loopback port for a child server to bind, that nothing else takes meanwhile.

    Binding port 0 and closing hands back a port that the next ``bind(0)`` or outgoing
    connection on this machine may get before the child binds it (uvicorn then exits with
    "address already in use", status 3: a test suite running many servers at once met it). One
    connection, closed by the accepting side first, leaves the port in TIME_WAIT: the kernel
    gives it to no other ``bind(0)``, while a server binding it with ``SO_REUSEADDR`` (uvicorn,
    asyncio's ``create_server``) takes it at once.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            accepted.close()
    return port
