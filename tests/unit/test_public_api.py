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
    "promptwire.backends",
    "promptwire.chat",
    "promptwire.chat_template",
    "promptwire.client",
    "promptwire.coldstart",
    "promptwire.compat",
    "promptwire.deploy",
    "promptwire.engine",
    "promptwire.errors",
    "promptwire.hf_chat_template",
    "promptwire.hookspecs",
    "promptwire.llm",
    "promptwire.modal_image",
    "promptwire.openai_protocol",
    "promptwire.plugins",
    "promptwire.protocol",
    "promptwire.router",
    "promptwire.server",
    "promptwire.settings",
    "promptwire.sse",
    "promptwire.stops",
    "promptwire.telemetry",
    "promptwire.tool_calls",
    "promptwire.testing",
    "promptwire.wire",
]

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
    entry_points = {"promptwire.cli", "promptwire.hookspecs"}
    assert found - entry_points <= set(PUBLIC_MODULES), sorted(found - set(PUBLIC_MODULES))
