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
    "promptwire.chat",
    "promptwire.client",
    "promptwire.client.sse",
    "promptwire.client.wire",
    "promptwire.coldstart",
    "promptwire.compat",
    "promptwire.deploy",
    "promptwire.engine",
    "promptwire.engine.hf_chat_template",
    "promptwire.engine.process",
    "promptwire.engine.tool_calls",
    "promptwire.errors",
    "promptwire.llm",
    "promptwire.modal_image",
    "promptwire.modal_scaling",
    "promptwire.plugins",
    "promptwire.plugins.backends",
    "promptwire.plugins.hookspecs",
    "promptwire.protocol",
    "promptwire.protocol.chat_template",
    "promptwire.protocol.stops",
    "promptwire.schema_budget",
    "promptwire.router",
    "promptwire.server",
    "promptwire.server.observability",
    "promptwire.server.observability.telemetry",
    "promptwire.server.openai",
    "promptwire.server.openai.protocol",
    "promptwire.settings",
    "promptwire.testing",
]

# Paths that moved into a package and keep working, each the same names as its new home.
COMPAT_MODULES = {
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


def test_top_level_exports_come_from_their_home_module() -> None:
    homes = promptwire._EXPORTS
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
    entry_points = {"promptwire.cli", "promptwire.plugins.hookspecs"}
    known = set(PUBLIC_MODULES) | set(COMPAT_MODULES)
    assert found - entry_points <= known, sorted(found - known)


@pytest.mark.parametrize(("old", "new"), sorted(COMPAT_MODULES.items()))
def test_moved_module_keeps_its_old_path(old: str, new: str) -> None:
    """A module moved into a package is still importable where it was, with the same objects."""
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    assert list(old_module.__all__) == list(new_module.__all__)
    for name in new_module.__all__:
        assert getattr(old_module, name) is getattr(new_module, name), name
