"""Servers for the OpenAI tests: ``promptwire serve`` in a child process, as a user runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cli_server import promptwire_serve

SERVE_TOKEN = "serve-openai-token-7a9c"


@pytest.fixture(scope="session")
def served_echo_url() -> Iterator[str]:
    """``promptwire serve`` (modal_dummy, echo, a bearer token): its base URL."""
    env = {"PROMPTWIRE_API_KEY": SERVE_TOKEN, "PROMPTWIRE_MODAL_DUMMY__ECHO": "true"}
    with promptwire_serve(env=env) as url:
        yield url


@pytest.fixture(scope="session")
def served_hello_url() -> Iterator[str]:
    """``promptwire serve`` (modal_dummy answering ``hello world``, a bearer token)."""
    with promptwire_serve(env={"PROMPTWIRE_API_KEY": SERVE_TOKEN}) as url:
        yield url
