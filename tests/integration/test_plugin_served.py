"""A third-party backend, really installed, chosen by ``--backend`` and served end to end by
the CLI in a fresh interpreter: discovery, serving and the client together."""

from __future__ import annotations

from pathlib import Path

from tests.support.installed_plugin import SHOUT_PLUGIN, install_plugin, run_cli


def test_a_backend_selected_by_environment_is_served_end_to_end(tmp_path: Path) -> None:
    """The whole path in a fresh interpreter: discovery, ``--backend``, serving, the client."""
    install_plugin(
        tmp_path, distribution="promptwire-shout", module="promptwire_shout", source=SHOUT_PLUGIN
    )
    result = run_cli("demo", "--backend", "shout", site_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "QUESTION: WHAT NFL TEAM" in result.stdout
