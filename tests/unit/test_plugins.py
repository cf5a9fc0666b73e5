"""Plugins come only through entry points of really installed distributions."""

from __future__ import annotations

from pathlib import Path

from tests.support.installed_plugin import SHOUT_PLUGIN, install_plugin, run_cli


def test_an_installed_distribution_shows_up_in_backends(tmp_path: Path) -> None:
    install_plugin(
        tmp_path, distribution="promptwire-shout", module="promptwire_shout", source=SHOUT_PLUGIN
    )
    result = run_cli("backends", site_dir=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "shout" in result.stdout and "promptwire-shout" in result.stdout
    assert "modal_dummy" in result.stdout


def test_load_plugins_variable_limits_what_loads(tmp_path: Path) -> None:
    install_plugin(
        tmp_path, distribution="promptwire-shout", module="promptwire_shout", source=SHOUT_PLUGIN
    )
    result = run_cli(
        "backends",
        site_dir=tmp_path,
        env={"PROMPTWIRE_LOAD_PLUGINS": "promptwire-shout", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "shout" in result.stdout
    assert "modal_dummy" not in result.stdout


def test_backend_selected_by_environment_is_served(tmp_path: Path) -> None:
    install_plugin(
        tmp_path, distribution="promptwire-shout", module="promptwire_shout", source=SHOUT_PLUGIN
    )
    result = run_cli("demo", site_dir=tmp_path, env={"PROMPTWIRE_BACKEND": "shout"})
    # demo serves modal_dummy by default; `--backend` picks another installed one
    assert result.returncode == 0, result.stderr
    result = run_cli("demo", "--backend", "shout", site_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "QUESTION: WHAT NFL TEAM" in result.stdout


def test_a_plugin_that_fails_to_import_is_named_and_the_rest_work(tmp_path: Path) -> None:
    install_plugin(
        tmp_path,
        distribution="promptwire-broken",
        module="promptwire_broken",
        source="raise RuntimeError('boom at import')\n",
    )
    result = run_cli("backends", site_dir=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "modal_dummy" in result.stdout
    assert "promptwire_broken" in result.stderr and "boom at import" in result.stderr


def test_a_misspelled_hook_fails_loudly(tmp_path: Path) -> None:
    source = (
        "from promptwire import hookimpl\n\n@hookimpl\ndef register_backend(register):\n    pass\n"
    )
    install_plugin(
        tmp_path, distribution="promptwire-typo", module="promptwire_typo", source=source
    )
    result = run_cli("backends", site_dir=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert "promptwire_typo" in result.stderr and "register_backend" in result.stderr
