"""A conformance kit for prompt endpoints, and in-process runs of an engine, for backend authors.

Only for test suites (it imports pytest; install ``promptwire[testing]``).

``EndpointConformanceTests`` checks an endpoint over HTTP: subclass it in a test module and give it
your endpoint (tune it with its class attributes: ``deterministic``, ``counts_words``,
``echoes_prompt``, ``prompt``, ``max_tokens``, ``timeout``):

```python
import pytest
from promptwire.server import BackgroundServer, create_app
from promptwire.testing import EndpointConformanceTests

from my_backend.engine import MyEngine


class TestMyBackend(EndpointConformanceTests):
    deterministic = True  # the same request always gets the same text

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls):
        with BackgroundServer(create_app(MyEngine())) as server:
            yield server.url
```

Every check talks HTTP to ``endpoint_url``, so the same class runs against a deployed endpoint
(a Modal URL, with the ``api_key`` fixture overridden if it has a token).

``run_engine`` runs an engine on one request with no server at all, under the same loop the
server runs (``stop``, ``max_tokens``, usage), for unit tests of the engine itself:

```python
from promptwire.testing import run_engine

run = run_engine(MyEngine(), {"prompt": "one two three", "max_tokens": 2})
assert run.text == "three two" and run.finish.finish_reason == "length"
```
"""

from promptwire.testing._assertions import (
    StreamResult,
    assert_protocol_error,
    assert_whole_reply,
    read_stream,
)
from promptwire.testing._conformance import EndpointConformanceTests
from promptwire.testing._engine_run import EngineRun, arun_engine, run_engine

__all__ = [
    "EndpointConformanceTests",
    "EngineRun",
    "StreamResult",
    "arun_engine",
    "assert_protocol_error",
    "assert_whole_reply",
    "read_stream",
    "run_engine",
]
