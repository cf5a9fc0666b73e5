"""The browser tier's support: Playwright (the Python package, a dev dependency) driving
a chromium executable of the system's own, Debian's ``chromium`` package (``apt-get install
chromium``; ``.ci/run`` installs it where it can). Playwright's own browser download is never
used. Without either, every test of the tier (``tests/console``) skips with the reason.

``PROMPTWIRE_TEST_CHROMIUM`` names another executable (read once, before the tests' clean
environment hides ``PROMPTWIRE_*``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest


def chromium_executable() -> str | None:
    named = os.environ.get("PROMPTWIRE_TEST_CHROMIUM")
    if named:
        return shutil.which(named)
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = chromium_executable()


def unavailable() -> str | None:
    """Why the browser tier cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed: it is in the dev group (`uv sync`)"
    if CHROMIUM is None:
        return (
            "no chromium executable: `apt-get install chromium` (Debian's package) or set "
            "PROMPTWIRE_TEST_CHROMIUM; Playwright's own browser download is not used"
        )
    return None


REASON = unavailable()
#: Marks for a module of the tier: skipped, with the reason, where it cannot run.
BROWSER = [
    pytest.mark.browser,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
    pytest.mark.timeout(300),
]

#: Playwright's waits: generous, for a loaded 2-core machine.
WAIT_MS = 60_000


@dataclass
class Tab:
    """A page in a fresh browser context (its own sessionStorage), with what it did recorded:
    console messages, uncaught errors, and every request with its headers."""

    page: Any
    context: Any
    messages: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def console_errors(self) -> list[str]:
        return [text for kind, text in self.messages if kind == "error"] + self.errors

    def origins(self) -> set[str]:
        return {
            f"{parts.scheme}://{parts.netloc}"
            for parts in (urlsplit(url) for url, _ in self.requests)
            if parts.scheme != "data"
        }
