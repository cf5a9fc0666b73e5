"""Marks for tests that need a distribution the default ``uv sync`` leaves out.

A newcomer's ``uv sync`` installs every member but ``promptwire-llamacpp``, whose llama-cpp-python
compiles llama.cpp; ``uv sync --all-packages`` adds it. A test that imports it skips with that
reason instead of failing, and the suite collects whatever is installed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

LLAMACPP_PLUGIN_MISSING = (
    "promptwire-llamacpp is not installed: `uv sync --all-packages` installs it "
    "(and compiles llama.cpp)"
)

#: Skips a test (or a module, as ``pytestmark``) without the llamacpp plugin's distribution.
NEEDS_LLAMACPP_PLUGIN = pytest.mark.skipif(
    importlib.util.find_spec("promptwire_llamacpp") is None, reason=LLAMACPP_PLUGIN_MISSING
)


def llamacpp_param(*values: Any) -> Any:
    """A ``parametrize`` case that needs the llamacpp plugin: skipped, with the reason, without
    it (its id is the one pytest would give the bare values)."""
    return pytest.param(*values, marks=NEEDS_LLAMACPP_PLUGIN)
