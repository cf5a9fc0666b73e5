"""Network marks for tests that talk to real servers on 127.0.0.1.

``langchain-tests`` brings pytest-socket and pytest-recording, which can block sockets
(``--disable-socket``, ``--block-network``). ``LOOPBACK_ONLY`` keeps loopback open under either
option and blocks every other host even in a plain run, so these tests provably stay on this
machine.
"""

from __future__ import annotations

import pytest

LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]

LOOPBACK_ONLY = [
    pytest.mark.enable_socket,
    pytest.mark.block_network(allowed_hosts=LOOPBACK_HOSTS),
]
