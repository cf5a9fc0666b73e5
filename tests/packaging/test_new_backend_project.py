"""The project ``promptwire new-backend`` writes passes its own tests as written.

It is written into a temporary directory away from the workspace, built and installed (its
dist-info, with the entry point, into a directory put on ``PYTHONPATH``; promptwire and the
rest come from the workspace's interpreter), and then its tests run in its own folder with its
own pytest settings: the engine in-process and the conformance kit against the backend found
through its entry point. Its code is checked with ruff (its own settings) and mypy --strict.
Building needs hatchling, from uv's cache or the package index; without either it is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 300

pytestmark = pytest.mark.timeout(TIMEOUT)


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _install(project: Path, site: Path) -> None:
    """The project, built, into ``site``; from uv's cache when it can, else from the index."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    install = [uv, "pip", "install", "--no-deps", "--python", sys.executable, "--target"]
    for offline in (["--offline"], []):
        command = [*install, str(site), *offline, str(project)]
        if subprocess.run(command, capture_output=True, timeout=TIMEOUT).returncode == 0:
            return
    pytest.skip("cannot build the project: hatchling is neither in uv's cache nor reachable")


def test_the_new_project_passes_its_tests_as_written(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    _run(bin_dir / "promptwire", "new-backend", "pig_latin", cwd=tmp_path)
    project = tmp_path / "promptwire-pig-latin"
    site = tmp_path / "site"
    _install(project, site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PROMPTWIRE_LOAD_PLUGINS", None)
    tests = _run(
        sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", cwd=project, env=env
    )
    # It ran (exit status 0: nothing failed), and not by skipping: the engine test and the kit.
    for passed in ("test_the_engine_stops_at_max_tokens", "test_stop_sequences_are_honoured"):
        assert f"{passed} PASSED" in tests, tests
    _run(bin_dir / "ruff", "check", ".", cwd=project)
    _run(bin_dir / "ruff", "format", "--check", ".", cwd=project)
    _run(bin_dir / "mypy", "--strict", "--no-incremental", "src", "tests", cwd=project, env=env)
