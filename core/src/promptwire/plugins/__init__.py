"""The plugin registry: every plugin, first-party or not, comes in through an entry point.

``PROMPTWIRE_LOAD_PLUGINS`` (a comma-separated list of entry-point or distribution names,
compared as package indexes compare names, so ``pw_rot13`` is ``pw-rot13``) limits which plugins
load; set to an empty string it loads none. A plugin that fails to import, has a misspelled hook,
implements no hook, raises in a hook or registers a backend name already taken is recorded in
``plugin_failures()`` by name and stage, and the others keep working. What is not a failure of
one plugin but still worth saying (a filter naming nothing installed, an entry point declared in a
misspelled group) is in ``plugin_notes()``. ``promptwire backends`` prints both.

One ``PluginRegistry`` serves the process (``default_registry()``); ``register`` and
``unregister`` add and remove a plugin object in-process, for applications that embed a backend
and for tests.
"""

from promptwire.plugins._registry import (
    ENTRY_POINT_GROUP,
    FIRST_PARTY_DISTRIBUTIONS,
    LOAD_PLUGINS_ENV,
    PluginFailure,
    PluginInfo,
    PluginRegistry,
    RegisteredBackend,
    canonical_name,
    default_registry,
    get_backend,
    get_backends,
    loaded_plugins,
    plugin_failures,
    plugin_manager,
    plugin_notes,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FIRST_PARTY_DISTRIBUTIONS",
    "LOAD_PLUGINS_ENV",
    "PluginFailure",
    "PluginInfo",
    "PluginRegistry",
    "RegisteredBackend",
    "canonical_name",
    "default_registry",
    "get_backend",
    "get_backends",
    "loaded_plugins",
    "plugin_failures",
    "plugin_manager",
    "plugin_notes",
]
