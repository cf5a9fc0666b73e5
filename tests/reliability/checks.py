"""What every answer of a promptwire server must look like, shared by the fuzzing suites."""

from __future__ import annotations

from typing import Any


def assert_protocol_answer(status_code: int, content_type: str, body: Any) -> None:
    """Never 5xx, never a redirect; an error (4xx) is exactly ``{"error": {"type": str,
    "message": str}}`` in JSON. ``body`` is the decoded JSON, or None when there is none."""
    assert status_code < 500, body
    assert not 300 <= status_code < 400, (status_code, body)
    if status_code < 400:
        return
    assert content_type.startswith("application/json"), content_type
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message"}, body
    assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)
    assert "Traceback" not in body["error"]["message"]
