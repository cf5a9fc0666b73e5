"""promptwire installed as a user outside this workspace installs it: from wheels.

The wheels are built from the workspace; a copy of the example plugin, outside the workspace, is
installed beside them into a fresh virtual environment. That environment must find the plugin
through its entry point, type-check it with mypy --strict against the installed wheel (py.typed),
pass the conformance kit with the test module the tutorial shows, and name the missing
distribution when the default backend is not installed; the promptwire wheel must carry the
console page's files (not Python: a build configuration could drop them) and serve them.
Installing needs the package index (CI has it); without it the module is skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "promptwire-reverse"
TIMEOUT = 300

pytestmark = pytest.mark.timeout(TIMEOUT)


@dataclass(frozen=True)
class Installed:
    python: Path
    bin: Path
    plugin: Path
    wheels: Path
    env: dict[str, str]

    def run(self, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )


def _uv(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    return subprocess.run(
        [uv, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def _tutorial_conformance_module() -> str:
    """The test module of the tutorial's step 6, as a reader would paste it."""
    text = (EXAMPLE / "README.md").read_text()
    step = text[text.index("## 6.") :]
    return re.search(r"```python\n(.*?)```", step, re.DOTALL).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("outside")
    wheels = base / "wheels"
    built = _uv("build", "--all-packages", "--wheel", "--out-dir", wheels, cwd=ROOT)
    assert built.returncode == 0, built.stderr
    plugin = base / "promptwire-reverse"  # the plugin's own project, away from the workspace
    shutil.copytree(EXAMPLE, plugin, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = base / "venv"
    assert _uv("venv", "--python", sys.executable, venv).returncode == 0
    python = venv / "bin" / "python"
    install = _uv(
        "pip", "install", "--python", python, "--find-links", wheels,
        "promptwire[server,testing]", plugin,
    )  # fmt: skip
    if install.returncode != 0 and "network" in install.stderr.lower():
        pytest.skip(f"the package index is unreachable: {install.stderr.strip()[-200:]}")
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTWIRE_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield Installed(python, venv / "bin", plugin, wheels, env)


def test_the_installed_plugin_is_found_by_its_entry_point(installed: Installed) -> None:
    result = installed.run(installed.bin / "promptwire", "backends")
    assert result.returncode == 0, result.stderr
    assert "reverse" in result.stdout and "promptwire-reverse" in result.stdout
    located = installed.run(installed.python, "-c", "import promptwire; print(promptwire.__file__)")
    assert "site-packages" in located.stdout  # the wheel, not the workspace's sources


def test_the_plugin_is_mypy_strict_clean_against_the_installed_wheel(installed: Installed) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", os.devnull,
         "--python-executable", str(installed.python), "src/promptwire_reverse"],
        cwd=installed.plugin, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tutorial_conformance_module_passes(installed: Installed) -> None:
    tests = installed.plugin / "tests"
    tests.mkdir()
    (tests / "test_conformance.py").write_text(_tutorial_conformance_module())
    result = installed.run(installed.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           tests, cwd=installed.plugin)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)


def test_a_missing_default_backend_names_its_distribution(installed: Installed) -> None:
    result = installed.run(installed.bin / "promptwire", "demo")
    assert result.returncode != 0
    assert "unknown backend 'modal_dummy'" in result.stderr
    assert "pip install promptwire-modal-dummy" in result.stderr


#: The installed app serves its console's shell from the wheel's own files.
_CONSOLE_SERVED = """
import asyncio, httpx
from promptwire.server import create_app
from promptwire_reverse.engine import ReverseEngine

async def main():
    transport = httpx.ASGITransport(app=create_app(ReverseEngine()))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path in ("/console", "/console/console.js", "/console/uPlot.iife.min.js"):
            answer = await client.get(path)
            print(path, answer.status_code, len(answer.content))

asyncio.run(main())
"""


def test_the_wheel_ships_the_console_page(installed: Installed) -> None:
    wheel = next(installed.wheels.glob("promptwire-[0-9]*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    static = "promptwire/server/console/static/"
    for name in ("index.html", "console.js", "console.css", "vendor/uplot/uPlot.iife.min.js",
                 "vendor/uplot/uPlot.min.css", "vendor/uplot/LICENSE",
                 "vendor/uplot/vendored.json"):  # fmt: skip
        assert static + name in names, name
    served = installed.run(installed.python, "-c", _CONSOLE_SERVED)
    assert served.returncode == 0, served.stderr[-2000:]
    lines = served.stdout.splitlines()
    assert len(lines) == 3, served.stdout
    for line in lines:
        _, status, size = line.split()
        assert status == "200" and int(size) > 0, line
