"""``promptwire serve`` in a child process: what users really run, with its own memory to sample
and its own output to search for secrets."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]

from tests.support.network import free_port

STARTUP_TIMEOUT = 90.0


def child_env(extra: dict[str, str] | None = None, site_dir: Path | None = None) -> dict[str, str]:
    """This environment without any PROMPTWIRE_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWIRE_")}
    if site_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site_dir), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra or {})
    return env


@dataclass
class ServedProcess:
    """A running ``promptwire serve``; ``output()`` is everything it printed so far."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.process.pid)

    def rss(self) -> int:
        """Resident memory of the server process, in bytes."""
        return int(self.ps.memory_info().rss)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def _wait_ready(served: ServedProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            if httpx.get(served.url + "health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not served.alive():
            raise RuntimeError(f"promptwire serve exited:\n{served.output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"promptwire serve did not start:\n{served.output()}")
        time.sleep(0.1)


@contextmanager
def promptwire_serve(
    *args: str,
    env: dict[str, str] | None = None,
    site_dir: Path | None = None,
    host: str = "127.0.0.1",
    wait: bool = True,
    open_files: int | None = None,
    new_session: bool = False,
) -> Iterator[ServedProcess]:
    """Run ``promptwire serve --host HOST --port <free> ARGS``, stdout and stderr to one file;
    with ``open_files``, under that limit on open files (``ulimit -n``, soft and hard); with
    ``new_session``, in a process group of its own (for signals sent to the whole group)."""
    port = free_port()
    command: Sequence[str] = [
        sys.executable,
        "-c",
        "from promptwire.cli import main; main()",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        *args,
    ]
    if open_files is not None:
        command = ["/bin/sh", "-c", f'ulimit -n {open_files} && exec "$@"', "sh", *command]
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(env, site_dir),
                cwd=tmp,
                start_new_session=new_session,
            )
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        served = ServedProcess(process, f"http://{shown_host}:{port}/", log_path)
        try:
            if wait:
                _wait_ready(served)
            yield served
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
