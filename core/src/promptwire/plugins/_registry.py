"""The plugin registry: every plugin, first-party or not, comes in through an entry point of
the group ``promptwire``; a failure is reported by name and stage."""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from promptwire.errors import ConfigurationError, PluginError
from promptwire.plugins import hookspecs
from promptwire.plugins.backends import Backend

if TYPE_CHECKING:
    import typer

ENTRY_POINT_GROUP = "promptwire"
LOAD_PLUGINS_ENV = "PROMPTWIRE_LOAD_PLUGINS"
# The distributions of promptwire's own backends, named when one is asked for but missing.
FIRST_PARTY_DISTRIBUTIONS = {
    "modal_dummy": "promptwire-modal-dummy",
    "modal_exllama": "promptwire-modal-exllama",
    "llamacpp": "promptwire-llamacpp",
    "openai": "promptwire-openai",
}

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
    """Where it failed: ``import``, ``hooks``, ``register_backends``, ``register_commands`` or
    ``duplicate``."""
    error: str


@dataclass(frozen=True)
class RegisteredBackend:
    backend: Backend
    plugin: PluginInfo


def canonical_name(name: str) -> str:
    """A plugin or distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


class PluginRegistry:
    """The plugins of a process, their backends, and what went wrong loading them."""

    def __init__(self) -> None:
        self.hooks = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.hooks.add_hookspecs(hookspecs)
        self._plugins: dict[str, PluginInfo] = {}
        self._failures: list[PluginFailure] = []
        self._notes: list[str] = []
        self._excluded: list[str] = []
        self._backends: dict[str, RegisteredBackend] | None = None
        self._loaded = False

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Import and register every allowed entry point of the ``promptwire`` group, once."""
        if self._loaded:
            return
        self._loaded = True
        allowed = _allowed_names()
        found: set[str] = set()
        for entry_point in sorted(
            metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
        ):
            dist = entry_point.dist
            info = PluginInfo(
                entry_point.name, dist.name if dist else None, dist.version if dist else None
            )
            names = {canonical_name(n) for n in (info.name, info.distribution) if n}
            found |= names
            if allowed is not None and not names & allowed:
                self._excluded.append(info.name)
                continue
            try:
                plugin = entry_point.load()
            except (Exception, SystemExit) as exc:  # a plugin that exits at import must not end us
                self._fail(info, "import", exc)
                continue
            self._add(info, plugin)
        if allowed is not None and (unknown := sorted(allowed - found)):
            self._note(
                f"{LOAD_PLUGINS_ENV} names {', '.join(unknown)}, which no installed plugin is "
                f"(installed: {', '.join(sorted(found)) or 'none'})"
            )
        self._note_misspelled_groups()

    def register(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Add a plugin object (a module, or any object with hook implementations) in-process,
        with the same checks an installed plugin gets. Raises ``PluginError`` where an installed
        plugin would be recorded as failed."""
        self.load()
        failures = len(self._failures)
        info = PluginInfo(name, distribution, version)
        self._add(info, plugin)
        if len(self._failures) > failures:
            failure = self._failures.pop()
            raise PluginError(f"plugin {name!r} not registered ({failure.stage}): {failure.error}")
        return info

    def unregister(self, name: str) -> None:
        """Remove a plugin (and its backends) registered under ``name``."""
        if self._plugins.pop(name, None) is None:
            raise PluginError(f"no plugin named {name!r} is registered")
        self.hooks.unregister(name=name)
        self._backends = None

    def _add(self, info: PluginInfo, plugin: object) -> None:
        if info.name in self._plugins:
            self._fail(info, "duplicate", f"a plugin named {info.name!r} is already loaded")
            return
        self.hooks.register(plugin, name=info.name)
        try:
            self.hooks.check_pending()
        except pluggy.PluginValidationError as exc:
            self.hooks.unregister(name=info.name)
            self._fail(info, "hooks", exc)
            return
        if not self.hooks.get_hookcallers(plugin):
            self.hooks.unregister(name=info.name)
            hooks = ", ".join(sorted(_hook_names()))
            self._fail(
                info, "hooks", f"implements no promptwire hook ({hooks}; missing @hookimpl?)"
            )
            return
        self._plugins[info.name] = info
        self._backends = None

    # -- what was loaded -------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        self.load()
        return list(self._plugins.values())

    def failures(self) -> list[PluginFailure]:
        self.backends()
        return list(self._failures)

    def notes(self) -> list[str]:
        self.load()
        return list(self._notes)

    def backends(self) -> dict[str, RegisteredBackend]:
        """Every registered backend by name. Each plugin's hook runs alone, so one that raises
        only loses its own backends."""
        self.load()
        if self._backends is not None:
            return self._backends
        claims: list[RegisteredBackend] = []
        for info, hook in self._hooks_one_by_one("register_backends"):
            registered: list[Backend[Any]] = []
            try:
                hook(register=registered.append)
                for backend in registered:
                    if not isinstance(backend, Backend):
                        raise PluginError(f"registered {type(backend).__name__}, not a Backend")
            except (Exception, SystemExit) as exc:
                self._fail(info, "register_backends", exc)
                continue
            claims.extend(RegisteredBackend(backend, info) for backend in registered)
        # A plugin has first claim to the backend named after it, so a plugin whose entry point
        # merely sorts first cannot take over, say, `modal_dummy`; otherwise entry-point order.
        claims.sort(key=lambda claim: claim.backend.name != claim.plugin.name)
        backends: dict[str, RegisteredBackend] = {}
        for claim in claims:
            taken = backends.get(claim.backend.name)
            if taken is not None:
                self._fail(
                    claim.plugin,
                    "duplicate",
                    f"backend {claim.backend.name!r} is already registered by "
                    f"plugin {taken.plugin.name!r}; this one is ignored",
                )
                continue
            backends[claim.backend.name] = claim
        self._backends = backends
        return backends

    def backend(self, name: str) -> RegisteredBackend:
        backends = self.backends()
        if name in backends:
            return backends[name]
        installed = ", ".join(sorted(backends)) or "none"
        hints = []
        if failed := [f.plugin.name for f in self._failures]:
            hints.append(f"plugins that failed to load: {', '.join(failed)}")
        if self._excluded:
            hints.append(
                f"left out by {LOAD_PLUGINS_ENV}={os.environ.get(LOAD_PLUGINS_ENV, '')!r}: "
                f"{', '.join(self._excluded)}"
            )
        hint = "".join(f"; {h}" for h in hints)
        distribution = FIRST_PARTY_DISTRIBUTIONS.get(name)
        install = (
            f"Install {distribution} (pip install {distribution}, or its wheel; see "
            "docs/guides/installing.md)"
            if distribution
            else "Install the plugin that provides it"
        )
        raise ConfigurationError(
            f"unknown backend {name!r}; installed backends: {installed}{hint}. "
            f"{install}, or check PROMPTWIRE_BACKEND and {LOAD_PLUGINS_ENV}."
        )

    def add_commands(self, cli: typer.Typer) -> None:
        """Let every plugin add its commands to ``cli``, each alone: one that raises is recorded
        and loses only its own commands (pluggy would stop at it, dropping all after it)."""
        for info, hook in self._hooks_one_by_one("register_commands"):
            try:
                hook(cli=cli)
            except (Exception, SystemExit) as exc:
                self._fail(info, "register_commands", exc)

    # -- helpers ---------------------------------------------------------------------------------

    def _hooks_one_by_one(self, hook_name: str) -> list[tuple[PluginInfo, pluggy.HookCaller]]:
        self.load()
        callers = []
        for name, info in self._plugins.items():
            others = [p for n, p in self.hooks.list_name_plugin() if n != name]
            callers.append((info, self.hooks.subset_hook_caller(hook_name, remove_plugins=others)))
        return callers

    def _fail(self, plugin: PluginInfo, stage: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._failures.append(PluginFailure(plugin, stage, text))
        logger.error("promptwire plugin %r failed (%s): %s", plugin.name, stage, text)

    def _note(self, text: str) -> None:
        self._notes.append(text)
        logger.warning("promptwire plugins: %s", text)

    def _note_misspelled_groups(self) -> None:
        """An entry point declared in a group that is almost ``promptwire`` is never loaded, and
        nothing else would say so."""
        for group in sorted(metadata.entry_points().groups):
            if group == ENTRY_POINT_GROUP:
                continue
            near = difflib.SequenceMatcher(None, group.lower(), ENTRY_POINT_GROUP).ratio() >= 0.8
            if near or canonical_name(group).startswith(f"{ENTRY_POINT_GROUP}-"):
                owners = sorted(
                    {
                        ep.dist.name if ep.dist else ep.name
                        for ep in metadata.entry_points(group=group)
                    }
                )
                self._note(
                    f"entry points in group {group!r} (from {', '.join(owners)}) are not loaded: "
                    f"promptwire reads the group {ENTRY_POINT_GROUP!r}"
                )


def _allowed_names() -> set[str] | None:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {canonical_name(name.strip()) for name in raw.split(",") if name.strip()}


def _hook_names() -> set[str]:
    return {name for name in vars(hookspecs) if name.startswith("register_")}


_default = PluginRegistry()


def default_registry() -> PluginRegistry:
    """The registry of this process: installed plugins, plus any registered in-process."""
    return _default


def plugin_manager() -> pluggy.PluginManager:
    _default.load()
    return _default.hooks


def loaded_plugins() -> list[PluginInfo]:
    return _default.plugins()


def plugin_failures() -> list[PluginFailure]:
    return _default.failures()


def plugin_notes() -> list[str]:
    return _default.notes()


def get_backends() -> dict[str, RegisteredBackend]:
    return _default.backends()


def get_backend(name: str) -> RegisteredBackend:
    return _default.backend(name)
