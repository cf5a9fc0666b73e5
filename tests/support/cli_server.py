"""``promptwire serve`` in a real child process, for tests that want the CLI path end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.support.network import free_port

STARTUP_TIMEOUT = 90.0


@contextmanager
def promptwire_serve(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``promptwire serve ARGS`` on a free loopback port; yield its URL once ``/health`` is
    200; stop it afterwards. ``env`` adds to a copy of the environment without PROMPTWIRE_*."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWIRE_")}
    child_env.update(env or {})
    command = [sys.executable, "-c", "from promptwire.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning", *args],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if httpx.get(url + "health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                _, stderr = (
                    process.communicate(timeout=30) if process.poll() is not None else ("", "")
                )
                raise RuntimeError(f"promptwire serve did not start: {stderr[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
