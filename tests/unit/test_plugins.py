"""The plugin registry: entry points of really installed distributions (a dist-info written to a
directory put on ``sys.path``), read in this process by a fresh ``PluginRegistry``; and plugins
registered in-process. The CLI serving one in a fresh interpreter:
tests/integration/test_plugin_served.py."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import typer
from promptwire import Backend, ConfigurationError, PluginError, hookimpl
from promptwire.plugins import PluginRegistry, _registry as registry_module, canonical_name
from typer.testing import CliRunner

from tests.support.installed_plugin import SHOUT_PLUGIN, install_plugin


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for throwaway distributions; their modules are forgotten
    afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]
    importlib.invalidate_caches()


def install_shout(site: Path, **options: str) -> None:
    install_plugin(
        site,
        distribution="promptwire-shout",
        module="promptwire_shout",
        source=SHOUT_PLUGIN,
        **options,
    )


def test_an_installed_distribution_registers_its_backends(site: Path) -> None:
    install_shout(site)
    registry = PluginRegistry()
    backends = registry.backends()
    assert backends["shout"].plugin.distribution == "promptwire-shout"
    assert "modal_dummy" in backends  # the first-party plugins come the same way
    assert not registry.failures()


def test_load_plugins_limits_what_loads_comparing_names_as_indexes_do(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_shout(site)
    monkeypatch.setenv("PROMPTWIRE_LOAD_PLUGINS", "promptwire_shout")  # the dist is -shout
    registry = PluginRegistry()
    assert set(registry.backends()) == {"shout"}
    assert not registry.notes()
    with pytest.raises(ConfigurationError) as caught:
        registry.backend("modal_dummy")
    message = str(caught.value)
    assert "left out by PROMPTWIRE_LOAD_PLUGINS='promptwire_shout'" in message
    assert "modal_dummy" in message.split("left out by")[1]


def test_a_filter_naming_nothing_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_LOAD_PLUGINS", "pw-rot13, modal_dummy")
    registry = PluginRegistry()
    assert set(registry.backends()) == {"modal_dummy"}
    [note] = registry.notes()
    assert "names pw-rot13, which no installed plugin is" in note
    assert "modal-dummy" in note  # what is installed, to compare


def test_a_plugin_that_fails_to_import_is_recorded_and_the_rest_work(site: Path) -> None:
    install_plugin(
        site,
        distribution="promptwire-broken",
        module="promptwire_broken",
        source="raise RuntimeError('boom at import')\n",
    )
    registry = PluginRegistry()
    assert "modal_dummy" in registry.backends()
    [failure] = registry.failures()
    assert (failure.plugin.name, failure.stage) == ("promptwire_broken", "import")
    assert "boom at import" in failure.error


def test_a_misspelled_hook_fails_loudly(site: Path) -> None:
    source = (
        "from promptwire import hookimpl\n\n@hookimpl\ndef register_backend(register):\n    pass\n"
    )
    install_plugin(site, distribution="promptwire-typo", module="promptwire_typo", source=source)
    [failure] = PluginRegistry().failures()
    assert failure.stage == "hooks" and "register_backend" in failure.error


def test_a_plugin_without_hookimpl_is_a_failure_not_silence(site: Path) -> None:
    source = "def register_backends(register):\n    raise AssertionError('never called')\n"
    install_plugin(site, distribution="promptwire-bare", module="promptwire_bare", source=source)
    [failure] = PluginRegistry().failures()
    assert failure.stage == "hooks"
    assert "implements no promptwire hook" in failure.error and "@hookimpl" in failure.error


@pytest.mark.parametrize("group", ["promptwires", "promptwire.plugins", "prompt-wire"])
def test_an_entry_point_in_a_misspelled_group_is_noted(site: Path, group: str) -> None:
    install_shout(site, group=group)
    registry = PluginRegistry()
    assert "shout" not in registry.backends()
    [note] = registry.notes()
    assert f"group {group!r} (from promptwire-shout) are not loaded" in note


def module_with(name: str, **functions: object) -> ModuleType:
    module = ModuleType(name)
    for attribute, function in functions.items():
        setattr(module, attribute, function)
    return module


@hookimpl
def _register_echo(register: object) -> None:
    register(Backend(name="echo_inprocess", description="in-process"))  # type: ignore[operator]


def test_register_and_unregister_in_process() -> None:
    registry = PluginRegistry()
    plugin = module_with("inprocess", register_backends=_register_echo)
    info = registry.register(plugin, "inprocess", distribution="my-app")
    assert registry.backend("echo_inprocess").plugin == info
    registry.unregister("inprocess")
    assert "echo_inprocess" not in registry.backends()
    with pytest.raises(PluginError, match="no plugin named"):
        registry.unregister("inprocess")


def test_in_process_registration_gets_the_same_checks() -> None:
    registry = PluginRegistry()
    with pytest.raises(PluginError, match="implements no promptwire hook"):
        registry.register(module_with("nothing"), "nothing")
    with pytest.raises(PluginError, match="duplicate"):
        registry.register(module_with("dup", register_backends=_register_echo), "modal_dummy")
    assert "nothing" not in {p.name for p in registry.plugins()}


def test_a_failing_register_commands_is_recorded_and_others_keep_theirs() -> None:
    @hookimpl
    def register_commands(cli: typer.Typer) -> None:
        raise RuntimeError("boom in commands")

    registry = PluginRegistry()
    registry.register(module_with("bad_commands", register_commands=register_commands), "bad")
    cli = typer.Typer()
    registry.add_commands(cli)
    failure = next(f for f in registry.failures() if f.plugin.name == "bad")
    assert failure.stage == "register_commands" and "boom in commands" in failure.error
    assert any(c.name == "exllama" for c in cli.registered_groups)  # modal_exllama's


def test_the_backends_command_lists_backends_failures_and_notes(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_shout(site)
    install_plugin(
        site, distribution="promptwire-broken", module="promptwire_broken", source="1/0\n"
    )
    install_plugin(
        site,
        distribution="promptwire-lost",
        module="promptwire_lost",
        source="",
        group="promptwires",
    )
    monkeypatch.setattr(registry_module, "_default", PluginRegistry())
    from promptwire.cli import app

    result = CliRunner().invoke(app, ["backends"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "shout" in result.stdout and "promptwire-shout" in result.stdout
    shown = " ".join(result.stderr.split())
    assert "'promptwire_broken' (promptwire-broken) failed at import: ZeroDivisionError" in shown
    assert "group 'promptwires' (from promptwire-lost) are not loaded" in shown


def test_canonical_names() -> None:
    assert (
        canonical_name("Promptwire_Reverse")
        == canonical_name("promptwire.reverse")
        == ("promptwire-reverse")
    )
