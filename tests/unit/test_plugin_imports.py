"""Plugins use promptwire's public names only, as a third-party plugin must: no plugin module
imports a ``promptwire`` module path with an underscored part (``promptwire.server._app``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = sorted(
    path
    for pattern in ("plugins/*/src/**/*.py", "examples/*/src/**/*.py")
    for path in ROOT.glob(pattern)
)


def _private_promptwire_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "promptwire" and any(
                p.startswith("_") and not p.startswith("__") for p in parts[1:]
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_plugin_sources_are_found() -> None:
    assert len(PLUGIN_SOURCES) > 10


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_imports_public_promptwire_names_only(path: Path) -> None:
    assert _private_promptwire_imports(path) == []
