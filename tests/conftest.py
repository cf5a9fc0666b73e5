"""Shared fixtures: a clean environment for every test, and real servers on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.support.engines import ObservedEngine
from tests.support.route_servers import echo, one_slot, tools  # noqa: F401  (the route tests')
from tests.support.servers import serve_engine

UNIT = Path(__file__).parent / "unit"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for ``-n auto`` (pyproject's addopts): four for the suite, whose tests mostly wait
    on sockets and child processes, so four fit two cores; none when only unit tests run, since
    starting workers (each importing LangChain) takes longer than those tests."""
    paths = [config.invocation_params.dir / arg.split("::")[0] for arg in config.args]
    only_unit = bool(paths) and all(path.resolve().is_relative_to(UNIT) for path in paths)
    return 0 if only_unit else 4


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the developer's PROMPTWIRE_* variables or a stray .env file."""
    for name in list(os.environ):
        if name.startswith("PROMPTWIRE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="module")
def dummy_url() -> Iterator[str]:
    """A real server with the default dummy engine (answers ``hello world``)."""
    with serve_engine(DummyEngine(DummySettings())) as server:
        yield server.url


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    """A real server whose dummy engine echoes the prompt."""
    with serve_engine(DummyEngine(DummySettings(echo=True))) as server:
        yield server.url


@pytest.fixture(scope="module")
def observed() -> Iterator[tuple[ObservedEngine, str]]:
    """An echoing server whose engine records requests and peak concurrency."""
    engine = ObservedEngine(DummySettings(echo=True))
    with serve_engine(engine) as server:
        yield engine, server.url


@pytest.fixture(scope="module")
def slow() -> Iterator[tuple[ObservedEngine, str]]:
    """Echo with 0.3 s to the first word and 20 words/s after it."""
    engine = ObservedEngine(DummySettings(echo=True, first_token_delay=0.3, tokens_per_second=20))
    with serve_engine(engine) as server:
        yield engine, server.url
