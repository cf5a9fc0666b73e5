"""Broken third-party plugins, really installed (dist-info + entry point) in a fresh interpreter:
each is reported by name, distribution and stage, and every other plugin keeps working."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.reliability.served import promptwire_serve
from tests.support.installed_plugin import SHOUT_PLUGIN, install_plugin, run_cli

WIDE = {"COLUMNS": "250"}

GOOD = SHOUT_PLUGIN

HOOK = "from promptwire import Backend, hookimpl\n\n@hookimpl\n"

# name: (entry point, module source, stage, words the report must contain)
BROKEN: dict[str, tuple[str, str, str, str]] = {
    "raises-at-import": (
        "pw_import_boom",
        "raise RuntimeError('boom at import')\n",
        "import",
        "RuntimeError: boom at import",
    ),
    "exits-at-import": (
        "pw_exits",
        "import sys\nsys.exit('a dependency is missing')\n",
        "import",
        "SystemExit: a dependency is missing",
    ),
    "raises-in-hook": (
        "pw_hook_boom",
        HOOK + "def register_backends(register):\n    raise ValueError('boom in hook')\n",
        "register_backends",
        "ValueError: boom in hook",
    ),
    "registers-garbage": (
        "pw_garbage",
        HOOK + "def register_backends(register):\n    register('modal_dummy')\n",
        "register_backends",
        "registered str, not a Backend",
    ),
    "invalid-backend-name": (
        "pw_bad_name",
        HOOK + "def register_backends(register):\n    register(Backend(name='Bad Name!'))\n",
        "register_backends",
        "invalid backend name 'Bad Name!'",
    ),
    "duplicate-sorting-first": (
        "aaa_dup",
        HOOK + "def register_backends(register):\n    register(Backend(name='modal_dummy'))\n",
        "duplicate",
        "backend 'modal_dummy' is already registered by plugin 'modal_dummy'",
    ),
    "duplicate-sorting-last": (
        "zzz_dup",
        HOOK + "def register_backends(register):\n    register(Backend(name='modal_dummy'))\n",
        "duplicate",
        "backend 'modal_dummy' is already registered by plugin 'modal_dummy'",
    ),
    "misspelled-hook": (
        "pw_typo",
        HOOK + "def register_backend(register):\n    pass\n",
        "hooks",
        "unknown hook 'register_backend'",
    ),
}


def _install(site: Path, name: str) -> str:
    entry_point, source, _, _ = BROKEN[name]
    module = f"pw_{name.replace('-', '_')}"
    install_plugin(
        site,
        distribution=f"promptwire-{name}",
        module=module,
        source=source,
        entry_point=entry_point,
    )
    return entry_point


def _dummy_row(stdout: str) -> str:
    rows = [line for line in stdout.splitlines() if " modal_dummy " in line]
    assert len(rows) == 1, stdout
    return rows[0]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_plugin_is_reported_and_the_others_keep_working(tmp_path: Path, name: str) -> None:
    entry_point = _install(tmp_path, name)
    _, _, stage, words = BROKEN[name]
    result = run_cli("backends", site_dir=tmp_path, env=WIDE)
    assert result.returncode == 0, result.stderr
    report = f"plugin {entry_point!r} (promptwire-{name}) failed at {stage}:"
    assert report in result.stderr and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # modal_dummy is still listed, served by its own distribution, with its engine
    row = _dummy_row(result.stdout)
    assert "promptwire-modal-dummy" in row and "yes" in row
    assert "modal_exllama" in result.stdout


def test_all_of_them_at_once_and_a_good_plugin_is_still_served(tmp_path: Path) -> None:
    for name in BROKEN:
        _install(tmp_path, name)
    install_plugin(
        tmp_path, distribution="promptwire-shout", module="promptwire_shout", source=GOOD
    )
    listed = run_cli("backends", site_dir=tmp_path, env=WIDE)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.count("failed at") == len(BROKEN)
    assert " shout " in listed.stdout and "promptwire-shout" in listed.stdout
    assert "promptwire-modal-dummy" in _dummy_row(listed.stdout)

    env = {"PROMPTWIRE_BACKEND": "shout"}
    with promptwire_serve("--log-level", "warning", env=env, site_dir=tmp_path) as served:
        reply = httpx.post(served.url, json={"prompt": "quiet please"})
        assert reply.status_code == 200 and reply.json()["prompt"] == "QUIET PLEASE"
        invoked = run_cli(
            "invoke",
            "quiet please",
            site_dir=tmp_path,
            env={**env, "PROMPTWIRE_ENDPOINT_URL": served.url},
        )
        output = served.output()
    assert invoked.returncode == 0 and invoked.stdout.strip() == "QUIET PLEASE"
    assert "serving backend shout" in " ".join(output.split())
    assert "pw_import_boom" in output  # the failures are logged by the server too


def test_asking_for_a_backend_whose_plugin_failed_names_the_failures(tmp_path: Path) -> None:
    _install(tmp_path, "raises-at-import")
    result = run_cli("serve", "--backend", "pw_import_boom", "--port", "0", site_dir=tmp_path)
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "unknown backend 'pw_import_boom'" in text
    assert "plugins that failed to load: pw_import_boom" in text
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("entry_point", ["aaa_commands", "zzz_commands"])
def test_a_plugin_whose_commands_fail_does_not_take_other_commands_down(
    tmp_path: Path, entry_point: str
) -> None:
    install_plugin(
        tmp_path,
        distribution="promptwire-bad-commands",
        module="pw_bad_commands",
        source="from promptwire import hookimpl\n\n@hookimpl\n"
        "def register_commands(cli):\n    raise RuntimeError('boom in commands')\n",
        entry_point=entry_point,
    )
    result = run_cli("--help", site_dir=tmp_path, env=WIDE)
    assert result.returncode == 0, result.stderr
    failed = f"plugin {entry_point!r} failed (register_commands): RuntimeError: boom"
    assert failed in result.stderr
    assert " exllama " in result.stdout  # modal_exllama's own command is still there
    listed = run_cli("backends", site_dir=tmp_path, env=WIDE)
    assert listed.returncode == 0
    # Recorded like any other failure, so `promptwire backends` lists it too.
    assert f"plugin {entry_point!r} (promptwire-bad-commands) failed at register_commands" in (
        " ".join(listed.stderr.split())
    )
