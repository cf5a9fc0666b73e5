"""A conformance kit for prompt endpoints: run promptwire's protocol checks against your backend.

Only for test suites (it imports pytest; install ``promptwire[testing]``). Subclass
``EndpointConformanceTests`` in a test module and give it your endpoint::

    import pytest
    from promptwire.server import BackgroundServer, create_app
    from promptwire.testing import EndpointConformanceTests

    from my_backend.engine import MyEngine


    class TestMyBackend(EndpointConformanceTests):
        echoes_prompt = False  # True if replies contain the prompt (enables the community test)

        @pytest.fixture(scope="class")
        @classmethod
        def endpoint_url(cls):
            with BackgroundServer(create_app(MyEngine())) as server:
                yield server.url

Every check talks HTTP to ``endpoint_url``, so the same class runs against a deployed endpoint
(a Modal URL, with ``api_key`` overridden if it has a token).
"""

from promptwire.testing._conformance import (
    EndpointConformanceTests,
    StreamResult,
    assert_protocol_error,
    assert_whole_reply,
    read_stream,
)

__all__ = [
    "EndpointConformanceTests",
    "StreamResult",
    "assert_protocol_error",
    "assert_whole_reply",
    "read_stream",
]
