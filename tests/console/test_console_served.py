"""The console through ``promptwire serve`` as a user starts it (a child process, settings from
the environment): served by default, its shell open and its figures behind ``--api-key``, and
gone with ``PROMPTWIRE_CONSOLE=false``. No browser needed."""

from __future__ import annotations

import httpx

from tests.support.cli_server import promptwire_serve

DUMMY = {"PROMPTWIRE_LOAD_PLUGINS": "modal_dummy"}


def test_promptwire_serve_serves_the_console_and_its_off_switch_removes_it() -> None:
    with promptwire_serve("--backend", "modal_dummy", "--api-key", "k", env=DUMMY) as url:
        page = httpx.get(url + "console", timeout=30)
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert httpx.get(url + "console/stats", timeout=30).status_code == 401
        authorized = {"Authorization": "Bearer k"}
        assert httpx.get(url + "console/stats", headers=authorized, timeout=30).status_code == 200
    off = {**DUMMY, "PROMPTWIRE_CONSOLE": "false"}
    with promptwire_serve("--backend", "modal_dummy", env=off) as url:
        assert httpx.get(url + "console", timeout=30).status_code == 404
        assert httpx.get(url + "console/stats", timeout=30).status_code == 404
        assert httpx.get(url + "health", timeout=30).status_code == 200
