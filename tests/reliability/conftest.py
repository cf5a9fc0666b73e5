"""Fixtures of the reliability suite: one misbehaving server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.faults import FaultServer, fault_server


@pytest.fixture(scope="session")
def faults() -> Iterator[FaultServer]:
    """The misbehaving server; each ``faults.url(...)`` counts its own requests."""
    with fault_server() as server:
        yield server
