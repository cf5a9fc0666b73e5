"""The plugin manager: every plugin, first-party or not, comes in through an entry point.

``PROMPTWIRE_LOAD_PLUGINS`` (a comma-separated list of entry-point or distribution names) limits
which plugins load; set to an empty string it loads none. A plugin that fails to import, has a
misspelled hook, raises in a hook or registers a backend name already taken is recorded in
``plugin_failures()`` by name and the others keep working.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

import pluggy

from promptwire import hookspecs
from promptwire.backends import Backend
from promptwire.errors import ConfigurationError, PluginError

ENTRY_POINT_GROUP = "promptwire"
LOAD_PLUGINS_ENV = "PROMPTWIRE_LOAD_PLUGINS"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None


@dataclass(frozen=True)
class PluginFailure:
    plugin: PluginInfo
    stage: str
    """Where it failed: ``import``, ``hooks``, ``register_backends`` or ``duplicate``."""
    error: str


@dataclass(frozen=True)
class RegisteredBackend:
    backend: Backend
    plugin: PluginInfo


class _Registry:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.backends: dict[str, RegisteredBackend] | None = None
        self.loaded = False


_registry = _Registry()


def _allowed_names() -> set[str] | None:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _fail(plugin: PluginInfo, stage: str, error: BaseException | str) -> None:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    _registry.failures.append(PluginFailure(plugin, stage, text))
    logger.error("promptwire plugin %r failed (%s): %s", plugin.name, stage, text)


def load_plugins() -> None:
    """Import and register every allowed entry point of the ``promptwire`` group, once."""
    if _registry.loaded:
        return
    _registry.loaded = True
    allowed = _allowed_names()
    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = entry_point.dist
        info = PluginInfo(
            entry_point.name, dist.name if dist else None, dist.version if dist else None
        )
        if allowed is not None and not ({info.name, info.distribution} & allowed):
            continue
        try:
            module = entry_point.load()
        except (Exception, SystemExit) as exc:  # a plugin that exits at import must not end us
            _fail(info, "import", exc)
            continue
        _register_module(info, module)


def _register_module(info: PluginInfo, module: ModuleType | object) -> None:
    if info.name in _registry.plugins:
        _fail(info, "duplicate", f"a plugin named {info.name!r} is already loaded")
        return
    _registry.pm.register(module, name=info.name)
    try:
        _registry.pm.check_pending()
    except pluggy.PluginValidationError as exc:
        _registry.pm.unregister(name=info.name)
        _fail(info, "hooks", exc)
        return
    _registry.plugins[info.name] = info


def plugin_manager() -> pluggy.PluginManager:
    load_plugins()
    return _registry.pm


def loaded_plugins() -> list[PluginInfo]:
    load_plugins()
    return list(_registry.plugins.values())


def plugin_failures() -> list[PluginFailure]:
    get_backends()
    return list(_registry.failures)


def get_backends() -> dict[str, RegisteredBackend]:
    """Every registered backend by name. Each plugin's hook runs alone, so one that raises only
    loses its own backends."""
    load_plugins()
    if _registry.backends is not None:
        return _registry.backends
    claims: list[RegisteredBackend] = []
    pm = _registry.pm
    for name, info in _registry.plugins.items():
        others = [p for n, p in pm.list_name_plugin() if n != name]
        hook = pm.subset_hook_caller("register_backends", remove_plugins=others)
        registered: list[Backend] = []
        try:
            hook(register=registered.append)
            for backend in registered:
                if not isinstance(backend, Backend):
                    raise PluginError(f"registered {type(backend).__name__}, not a Backend")
        except (Exception, SystemExit) as exc:
            _fail(info, "register_backends", exc)
            continue
        claims.extend(RegisteredBackend(backend, info) for backend in registered)
    # A plugin has first claim to the backend named after it, so a plugin whose entry point
    # merely sorts first cannot take over, say, `modal_dummy`; otherwise entry-point order.
    claims.sort(key=lambda claim: claim.backend.name != claim.plugin.name)
    backends: dict[str, RegisteredBackend] = {}
    for claim in claims:
        taken = backends.get(claim.backend.name)
        if taken is not None:
            _fail(
                claim.plugin,
                "duplicate",
                f"backend {claim.backend.name!r} is already registered by "
                f"plugin {taken.plugin.name!r}; this one is ignored",
            )
            continue
        backends[claim.backend.name] = claim
    _registry.backends = backends
    return backends


def get_backend(name: str) -> RegisteredBackend:
    backends = get_backends()
    if name in backends:
        return backends[name]
    installed = ", ".join(sorted(backends)) or "none"
    failed = [f.plugin.name for f in _registry.failures]
    hint = f"; plugins that failed to load: {', '.join(failed)}" if failed else ""
    raise ConfigurationError(
        f"unknown backend {name!r}; installed backends: {installed}{hint}. "
        "Install the plugin that provides it, or check PROMPTWIRE_BACKEND and "
        f"{LOAD_PLUGINS_ENV}."
    )
