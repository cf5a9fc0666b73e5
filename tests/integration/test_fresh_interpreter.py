"""What a fresh interpreter sees: its own age, the imports the cold-start recorder costs, and
promptwire's version without its installed metadata (a Modal container's case). Each test starts
a Python process, so they live apart from the unit tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import promptwire


def test_the_process_age_is_read_from_proc() -> None:
    """A fresh interpreter that sleeps 0.3 s knows it is at least that old, and not much more."""
    code = (
        "import time; time.sleep(0.3); from promptwire.modal import coldstart; "
        "print(coldstart.process_age())"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    elapsed = time.monotonic() - started
    age = float(result.stdout)
    # /proc counts in clock ticks (1/100 s): allow one each way.
    assert 0.3 - 0.02 <= age <= elapsed + 0.02


def test_importing_the_recorder_is_light() -> None:
    heavy = {"fastapi", "prometheus_client", "pydantic", "httpx"}
    code = f"import sys, promptwire.modal.coldstart; print(sorted(set(sys.modules) & {heavy!r}))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.stdout.strip() == "[]"


def test_version_without_metadata_is_unknown_not_an_error() -> None:
    """A Modal container has promptwire's sources without its dist-info."""
    sources = Path(promptwire.__file__).resolve().parents[1]
    code = f"import sys; sys.path.insert(0, {str(sources)!r}); import promptwire; "
    code += "print(promptwire.__version__)"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unknown"
