"""ChatPromptwire as an object: cheap to import, secrets kept secret, settings resolved once."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest
from promptwire import ChatPromptwire

HEAVY = (
    "fastapi",
    "uvicorn",
    "starlette",
    "sse_starlette",
    "modal",
    "torch",
    "pytest",
    "prometheus_client",
    "opentelemetry.instrumentation",  # langsmith imports opentelemetry itself when installed
)


def test_importing_the_chat_model_stays_light() -> None:
    code = (
        "import sys, promptwire; promptwire.ChatPromptwire; import promptwire.langchain.chat; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_secrets_stay_out_of_reprs_and_params() -> None:
    chat = ChatPromptwire(
        endpoint_url="http://127.0.0.1:9/",
        api_key="sk-very-secret",
        modal_key="mk-secret",
        modal_secret="ms-secret",
    )
    for text in (repr(chat), str(chat._identifying_params), str(chat.model_dump())):
        assert "very-secret" not in text and "mk-secret" not in text and "ms-secret" not in text
    assert chat.lc_secrets == {
        "api_key": "PROMPTWIRE_API_KEY",
        "modal_key": "PROMPTWIRE_MODAL_KEY",
        "modal_secret": "PROMPTWIRE_MODAL_SECRET",
    }
    headers = chat.client.sync_client.headers
    assert headers["Authorization"] == "Bearer sk-very-secret"
    assert headers["Modal-Key"] == "mk-secret" and headers["Modal-Secret"] == "ms-secret"
    chat.close()


def test_defaults_come_from_settings() -> None:
    chat = ChatPromptwire()
    assert chat.endpoint_url == "http://127.0.0.1:8000/"
    assert (chat.timeout, chat.max_retries, chat.max_concurrency) == (600.0, 2, 16)
    assert chat._llm_type == "promptwire-chat"
    assert ChatPromptwire(model="m").model_name == "m"  # "model" is accepted as an alias


def test_unknown_arguments_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        ChatPromptwire(endpoint="http://127.0.0.1:9/")  # type: ignore[call-arg]
