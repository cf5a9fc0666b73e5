"""The suite collects whatever is installed: a test module that imports the llamacpp plugin at
its top (which the default ``uv sync`` leaves out) first skips without it, as the README's
``uv run pytest`` on a fresh clone needs. CI's first step runs exactly that; this catches it in
any environment, the full one included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]
OPTIONAL = "promptwire_llamacpp"


def _top_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def _guard_line(tree: ast.Module) -> int | None:
    """Where the module calls ``pytest.importorskip("promptwire_llamacpp", ...)``, if it does."""
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr | ast.Assign) else None
        if (
            isinstance(call, ast.Call)
            and ast.unparse(call.func) == "pytest.importorskip"
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and str(call.args[0].value).split(".")[0] == OPTIONAL
        ):
            return node.lineno
    return None


MODULES = sorted(TESTS.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(TESTS)))
def test_a_top_level_import_of_the_llamacpp_plugin_is_guarded(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    unguarded = [
        (line, module)
        for line, module in _top_level_imports(tree)
        if module.split(".")[0] == OPTIONAL
        and ((guard := _guard_line(tree)) is None or guard > line)
    ]
    assert not unguarded, (
        f"{path.name} imports {OPTIONAL} at line {unguarded[0][0]} with no "
        f'pytest.importorskip("{OPTIONAL}", reason=LLAMACPP_PLUGIN_MISSING) before it'
    )
