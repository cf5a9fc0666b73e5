"""schemathesis against the server's own OpenAPI schema, fetched from and run against a live
server on 127.0.0.1 with a token set, so every generated call also crosses the auth middleware.
Both schemathesis's own checks (no 5xx, documented statuses, content types and bodies, valid
data accepted, invalid data refused) and the protocol's error shape must hold.

(``schemathesis.pytest.from_fixture`` does not run under pytest 9, so the cases are drawn from
``schema.as_strategy()`` inside a plain hypothesis test.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from tests.reliability.checks import assert_protocol_answer
from tests.support.servers import serve_engine

TOKEN = "schemathesis-token-0c4e8b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOUBLE_EXACT = 2**53
#: Protocol v1.2's requests for tools and JSON: whether the server honours one depends on its
#: engine's capabilities (this one declares none, so it refuses them with 422 unsupported), and
#: some of their rules cannot be stated in JSON Schema (a named tool_choice names one of the
#: tools; tool names are unique). tests/tools covers them; the schema's other cases run here.
CAPABILITY_KEYS = ("tools", "tool_choice", "response_format")


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    with serve_engine(DummyEngine(DummySettings(echo=True)), api_key=TOKEN) as server:
        yield server.url.rstrip("/")


#: What counts as refusing invalid data: schemathesis's own list, and 413. A case that breaks
#: a ``maxItems`` by thousands of items can be larger than the server's body limit, which then
#: refuses it before reading it (seen once in CI: 10,001 messages, over 1 MiB).
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> Any:
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
    )
    return schemathesis.openapi.from_url(live_url + "/openapi.json", config=config, headers=AUTH)


def _exact_in_json(value: Any) -> bool:
    """False for integers past 2**53: RFC 8259 leaves them to each parser, and the generator
    rounds them near the seed's float bound (2**63), making "valid" cases that are not."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= DOUBLE_EXACT
    if isinstance(value, dict):
        return all(_exact_in_json(v) for v in value.values())
    if isinstance(value, list):
        return all(_exact_in_json(v) for v in value)
    return True


def _asks_capabilities(body: Any) -> bool:
    return isinstance(body, dict) and any(body.get(key) is not None for key in CAPABILITY_KEYS)


def _continues(body: Any) -> bool:
    """``continue_final_message`` needs messages ending with an assistant's text, which JSON
    Schema cannot state (tests/unit/test_protocol.py and the Messages route's tests cover it)."""
    return isinstance(body, dict) and body.get("continue_final_message") is True


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_schema_holds_on_the_live_server(
    data: st.DataObject, api_schema: Any, live_url: str, mode: GenerationMode
) -> None:
    strategy = api_schema.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        strategy = strategy.filter(
            lambda case: (
                _exact_in_json(case.body)
                and not _asks_capabilities(case.body)
                and not _continues(case.body)
            )
        )
    case = data.draw(strategy)
    response = case.call_and_validate(base_url=live_url, headers=AUTH, timeout=30)
    body = json.loads(response.content) if response.status_code >= 400 else None
    content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: a list
    assert_protocol_answer(response.status_code, content_type, body)


def test_the_schema_is_served_only_with_the_token(live_url: str, api_schema: Any) -> None:
    import httpx

    assert httpx.get(live_url + "/openapi.json").status_code == 401
    document = httpx.get(live_url + "/openapi.json", headers=AUTH).json()
    refs = [part.split('"')[0] for part in json.dumps(document).split('"$ref": "')[1:]]
    for ref in refs:  # every reference resolves inside the document itself
        node: Any = document
        for key in ref.removeprefix("#/").split("/"):
            node = node[key.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref
