"""``benchmarks.route_cost --bytecodes --by-function``: each route's extra Python, named."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.route_cost import ROUTES, _bytecodes, _print_bytecodes


def _sections(out: str) -> dict[str, str]:
    """Each route's indented lines (its functions), by the route's name."""
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in out.splitlines():
        if line.startswith("    "):
            lines.append(line)
        else:
            route = next(route for route in ROUTES if line.startswith(route))
            lines = sections[route] = []
    return {route: "\n".join(lines) for route, lines in sections.items()}


def test_each_route_lists_the_functions_of_its_own_protocol(
    capsys: pytest.CaptureFixture[str],
) -> None:
    counts = asyncio.run(_bytecodes(3))
    assert set(counts) == set(ROUTES)
    _print_bytecodes(counts, 3, 40)
    sections = _sections(capsys.readouterr().out)
    assert set(sections) == set(ROUTES)
    assert sections["prompt route /"] == ""  # the reference: its total only
    assert "openai/_translate.py:" in sections["OpenAI /v1/chat/completions"]
    assert " chat_request" in sections["OpenAI /v1/chat/completions"]
    assert "anthropic/_translate.py:" in sections["Anthropic /v1/messages"]
    assert "anthropic/" not in sections["OpenAI /v1/chat/completions"]
    assert "_responses_translate.py:" in sections["OpenAI /v1/responses"]
