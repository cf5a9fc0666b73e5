"""Install a throwaway promptwire plugin distribution into a directory, the way pip lays one out
(a module plus ``<name>-<version>.dist-info`` with METADATA and entry_points.txt), so that
``importlib.metadata`` finds it as really installed when the directory is on ``sys.path``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A well-behaved third-party backend, ``shout``: its engine upper-cases the prompt.
SHOUT_PLUGIN = """
from promptwire import Backend, hookimpl
from promptwire.engine import Engine, Finish, TextChunk
from promptwire.protocol import FinishReason, Usage


class ShoutEngine(Engine):
    model_name = "shout"

    async def stream(self, request):
        yield TextChunk(request.prompt.upper())
        yield Finish(FinishReason.STOP, Usage(completion_tokens=1))


@hookimpl
def register_backends(register):
    register(Backend(name="shout", description="upper-cases the prompt",
                     create_engine=lambda settings: ShoutEngine()))
"""


def install_plugin(
    site_dir: Path,
    *,
    distribution: str,
    module: str,
    source: str,
    entry_point: str | None = None,
    group: str = "promptwire",
) -> None:
    """Write module ``module`` with ``source`` and a distribution ``distribution`` whose entry
    point ``entry_point`` (default: the module name) in ``group`` loads it."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / f"{module}.py").write_text(source)
    dist_info = site_dir / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[{group}]\n{entry_point or module} = {module}\n")


def run_cli(
    *args: str,
    site_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``promptwire ARGS`` in a fresh interpreter, with ``site_dir`` (if any) on its path."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWIRE_")}
    if site_dir is not None:
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(site_dir), *filter(None, [child_env.get("PYTHONPATH")])]
        )
    child_env.update(env or {})
    code = "from promptwire.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=timeout,
        check=False,
    )
