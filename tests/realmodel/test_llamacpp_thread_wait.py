"""``PROMPTWIRE_LLAMACPP__THREAD_WAIT`` reaches the OpenMP runtime that llama.cpp's threads run
on, in the process that runs the engine (its own, by default): the runtime reads its variables
once, when llama.cpp loads, so the setting must be in that process's environment by then.

The OpenMP runtime itself says what it took: with ``OMP_DISPLAY_ENV=VERBOSE`` libgomp prints its
settings (``GOMP_SPINCOUNT`` among them) to standard error when it loads. Not a timing test (the
timings are benchmark 14's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.network import free_port
from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import REAL_MODEL, SERVE_ENVIRONMENT

pytestmark = REAL_MODEL

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)


def _spin_counts(env: dict[str, str], tmp_path: Path) -> list[int]:
    """The ``GOMP_SPINCOUNT`` each OpenMP runtime loaded by ``promptwire serve --backend
    llamacpp`` (with ``env``) reports, once the server is ready."""
    port = free_port()
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROMPTWIRE_") and k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    child_env.update({**SERVE_ENVIRONMENT, "OMP_DISPLAY_ENV": "VERBOSE", **env})
    log = tmp_path / "stderr.txt"
    command = [sys.executable, "-c", "from promptwire.cli import main; main()", "serve"]
    command += ["--backend", "llamacpp", "--port", str(port), "--log-level", "warning"]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=child_env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(30)
    text = log.read_text()
    return [int(count) for count in re.findall(r"GOMP_SPINCOUNT = '(\d+)'", text)]


@pytest.mark.parametrize(
    ("env", "spins"),
    [
        ({}, 300_000),  # auto: spinning, as spin (it chooses the threads of each pass)
        ({"PROMPTWIRE_LLAMACPP__THREAD_WAIT": "passive"}, 0),
        # The setting beats the OpenMP variables found in the environment.
        (
            {"PROMPTWIRE_LLAMACPP__THREAD_WAIT": "spin", "OMP_WAIT_POLICY": "PASSIVE"},
            300_000,
        ),
        (
            {"PROMPTWIRE_LLAMACPP__THREAD_WAIT": "7000", "PROMPTWIRE_ENGINE_PROCESS": "false"},
            7000,
        ),
    ],
    ids=["default (auto)", "passive", "spin over PASSIVE", "a spin count in-process"],
)
def test_the_engine_process_openmp_runtime_takes_the_setting(
    env: dict[str, str], spins: int, tmp_path: Path
) -> None:
    assert _spin_counts(env, tmp_path) == [spins]
