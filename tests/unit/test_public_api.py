"""The public surface is pinned: what a user or a backend author imports, and from where.

As httpx does, every public module lists its names in ``__all__`` and everything a module defines
without an underscore is in it, so a new helper is either exported on purpose or made private.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from types import ModuleType

import promptwire
import pytest

PUBLIC_MODULES = [
    "promptwire.cli",
    "promptwire.client",
    "promptwire.client.sse",
    "promptwire.client.wire",
    "promptwire.engine",
    "promptwire.engine.constraints",
    "promptwire.engine.hf_chat_template",
    "promptwire.engine.process",
    "promptwire.engine.tool_calls",
    "promptwire.engine.handoff",
    "promptwire.engine.worker",
    "promptwire.errors",
    "promptwire.langchain",
    "promptwire.langchain.chat",
    "promptwire.langchain.compat",
    "promptwire.langchain.llm",
    "promptwire.modal",
    "promptwire.modal.auth",
    "promptwire.modal.coldstart",
    "promptwire.modal.deploy",
    "promptwire.modal.image",
    "promptwire.modal.retire",
    "promptwire.modal.scaling",
    "promptwire.plugins",
    "promptwire.plugins.backends",
    "promptwire.plugins.hookspecs",
    "promptwire.protocol",
    "promptwire.protocol.chat_template",
    "promptwire.protocol.stops",
    "promptwire.router",
    "promptwire.server",
    "promptwire.server.anthropic",
    "promptwire.server.anthropic.protocol",
    "promptwire.server.console",
    "promptwire.server.observability",
    "promptwire.server.observability.telemetry",
    "promptwire.server.openai",
    "promptwire.server.openai.protocol",
    "promptwire.server.schema_budget",
    "promptwire.settings",
    "promptwire.testing",
]

# Modules that moved in the re-layout (old path: new home). Each old path is gone: the test below
# says so, so a user's import that changes is a decision the tests record.
MOVED_MODULES = {
    "promptwire.backends": "promptwire.plugins.backends",
    "promptwire.chat_template": "promptwire.protocol.chat_template",
    "promptwire.hf_chat_template": "promptwire.engine.hf_chat_template",
    "promptwire.hookspecs": "promptwire.plugins.hookspecs",
    "promptwire.openai_protocol": "promptwire.server.openai.protocol",
    "promptwire.sse": "promptwire.client.sse",
    "promptwire.stops": "promptwire.protocol.stops",
    "promptwire.telemetry": "promptwire.server.observability.telemetry",
    "promptwire.tool_calls": "promptwire.engine.tool_calls",
    "promptwire.wire": "promptwire.client.wire",
    "promptwire.coldstart": "promptwire.modal.coldstart",
    "promptwire.deploy": "promptwire.modal.deploy",
    "promptwire.modal_image": "promptwire.modal.image",
    "promptwire.modal_scaling": "promptwire.modal.scaling",
    "promptwire.schema_budget": "promptwire.server.schema_budget",
    "promptwire.llm": "promptwire.langchain.llm",
    "promptwire.chat": "promptwire.langchain.chat",
    "promptwire.compat": "promptwire.langchain.compat",
}

# What a backend author needs, importable from the package itself (the tutorial's imports).
PLUGIN_AUTHOR_API = {
    "Backend",
    "ClientAdapter",
    "Completion",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EngineNotReady",
    "EngineOverloaded",
    "Finish",
    "FinishReason",
    "PromptRequest",
    "RequestRejected",
    "StopScanner",
    "TextChunk",
    "Usage",
    "hookimpl",
}


def _defined_here(module: ModuleType) -> set[str]:
    """Public classes and functions the module defines itself (imports are not its surface)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }


def test_top_level_all_is_sorted_and_resolves() -> None:
    assert promptwire.__all__ == sorted(promptwire.__all__)
    for name in promptwire.__all__:
        assert getattr(promptwire, name) is not None, name


def test_the_public_names_are_read_as_python_reads_them() -> None:
    """``promptwire._exports`` reads the ``TYPE_CHECKING`` imports line by line (``ast`` would
    cost more than the import it serves): it must find what Python's own parser finds there."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(promptwire.__file__).read_text(encoding="utf-8"))
    (block,) = (
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    parsed = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name  # the re-export form; anything else is no public name
    }
    every = [
        alias for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names
    ]
    assert len(parsed) == len(every), "an import there that is not `Name as Name`"
    assert promptwire._exports() == parsed


def test_top_level_exports_come_from_their_home_module() -> None:
    homes = promptwire._exports()
    assert set(homes) | {"__version__"} == set(promptwire.__all__)
    for name, module_name in homes.items():
        assert name in importlib.import_module(module_name).__all__, (name, module_name)


def test_plugin_author_api_is_one_import_away() -> None:
    missing = PLUGIN_AUTHOR_API - set(promptwire.__all__)
    assert not missing


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = promptwire.Nope  # type: ignore[attr-defined]


def test_version_comes_from_the_installed_distribution() -> None:
    assert promptwire.__version__ == importlib.metadata.version("promptwire")


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_module_pins_its_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert list(exported) == sorted(set(exported), key=list(exported).index), "duplicates"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"
    unlisted = _defined_here(module) - set(exported)
    assert not unlisted, f"{module_name} defines public names not in __all__: {sorted(unlisted)}"


def test_every_module_is_public_and_pinned_or_underscored() -> None:
    """A new module is either part of the surface (listed above) or private by its name."""
    import pkgutil

    found = {
        info.name
        for info in pkgutil.walk_packages(promptwire.__path__, "promptwire.")
        if not any(part.startswith("_") for part in info.name.split("."))
    }
    entry_points = {"promptwire.plugins.hookspecs"}
    known = set(PUBLIC_MODULES)
    assert found - entry_points <= known, sorted(found - known)


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_a_moved_module_is_gone_from_its_old_path(old: str, new: str) -> None:
    """Nothing stays at an old path only to re-export (0.1.0 was never published): the old
    import fails, the new one works."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
    assert importlib.import_module(new).__all__
