"""The CLI given hostile settings and paths, run as a user runs it (a child ``promptwire``):
secrets in router member URLs, settings that are not JSON or nested too deeply, and names and
directories ``new-backend`` cannot use.

Before these fixes: ``promptwire status`` with ``PROMPTWIRE_BACKEND=router`` printed member URLs
whole (``?token=…`` and ``user:password@`` included), sent the password as Basic auth and asked
for ``/?token=…/health``; an endpoints value of ``'[not json'`` or ``''`` gave it a 64-line
``SettingsError`` traceback; JSON nested 3,000 deep (router endpoints for ``status`` and
``invoke``, the region of the dummy and llamacpp backends for ``serve``) a ``RecursionError`` one;
``new-backend $'abc\\n'`` wrote ``promptwire-abc\\n`` with invalid TOML, a ``--directory`` that is
a file gave a ``NotADirectoryError`` traceback and a dangling symlink a ``FileExistsError`` one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.installed_plugin import run_cli
from tests.support.network import LOOPBACK_ONLY
from tests.support.optional import llamacpp_param
from tests.support.servers import serve_asgi

pytestmark = LOOPBACK_ONLY

DEEP = "[" * 3000 + "]" * 3000
"""JSON nested deeper than Python's parser can follow (its recursion limit is 1,000)."""


def one_error_line(result: Any) -> str:
    """The command failed (exit status 1) with exactly one line on stderr, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    return str(line)


class Recorder:
    """An endpoint that answers ``/health`` under any path and records every request: its path,
    query and ``Authorization`` header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization")
        self.seen.append(
            (scope["path"], scope["query_string"].decode(), auth.decode() if auth else None)
        )
        healthy = scope["path"].endswith("/health")
        body = json.dumps({"model": "recorded"} if healthy else {"error": "none"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200 if healthy else 404,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    app = Recorder()
    with serve_asgi(app) as server:
        yield app, server.url


def router_env(endpoints: Any) -> dict[str, str]:
    return {"PROMPTWIRE_BACKEND": "router", "PROMPTWIRE_ROUTER__ENDPOINTS": json.dumps(endpoints)}


# -- secrets in member URLs ---------------------------------------------------------------------


def test_status_shows_members_without_their_query_and_reads_the_right_path(
    recorder: tuple[Recorder, str],
) -> None:
    app, url = recorder
    member = f"{url}v1?token=hush-51"
    result = run_cli("status", env=router_env([member]))
    single = run_cli("status", member)
    assert result.returncode == 0, result.stderr
    assert single.returncode == 0, single.stderr
    for shown in (result, single):
        assert "hush-51" not in shown.stdout + shown.stderr
        assert f"endpoint     {url}v1\n" in shown.stdout
    # The query stays on the request (it may be how the endpoint is reached), on the path.
    paths = {(path, query) for path, query, _ in app.seen}
    assert paths == {("/v1/health", "token=hush-51"), ("/v1/metrics", "token=hush-51")}


def test_status_refuses_a_member_url_with_credentials_and_sends_nothing(
    recorder: tuple[Recorder, str],
) -> None:
    app, url = recorder
    with_password = url.replace("http://", "http://reader:pass-word-77@")
    for result in (
        run_cli("status", env=router_env([url, with_password])),
        run_cli("status", with_password),
    ):
        line = one_error_line(result)
        assert "carries credentials" in line
        assert "pass-word-77" not in result.stdout + result.stderr
    assert app.seen == []  # nothing was sent, as Basic auth or otherwise


# -- settings that cannot be read ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["[not json", "", DEEP], ids=["not-json", "empty", "deep"])
@pytest.mark.parametrize("command", [["status"], ["invoke", "hi"]])
def test_router_endpoints_that_cannot_be_read_are_one_line(value: str, command: list[str]) -> None:
    env = {"PROMPTWIRE_BACKEND": "router", "PROMPTWIRE_ROUTER__ENDPOINTS": value}
    line = one_error_line(run_cli(*command, env=env))
    assert "PROMPTWIRE_ROUTER__" in line
    assert ("nested too deeply" if value == DEEP else "not JSON") in line


@pytest.mark.parametrize("backend", ["modal_dummy", llamacpp_param("llamacpp")])
def test_a_region_nested_too_deeply_is_one_line_from_serve(backend: str) -> None:
    env = {f"PROMPTWIRE_{backend.upper()}__REGION": DEEP}
    line = one_error_line(run_cli("serve", "--backend", backend, "--port", "0", env=env))
    assert "region" in line and "nested too deeply" in line


# -- new-backend --------------------------------------------------------------------------------


def listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_new_backend_refuses_a_name_with_a_trailing_newline(tmp_path: Path) -> None:
    line = one_error_line(run_cli("new-backend", "abc\n", "--directory", str(tmp_path)))
    assert "invalid backend name" in line
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("place", ["file", "under-a-file", "dangling-link"])
def test_new_backend_refuses_a_place_it_cannot_write_and_writes_nothing(
    tmp_path: Path, place: str
) -> None:
    (tmp_path / "a-file").write_text("the author's")
    (tmp_path / "promptwire-abc").symlink_to(tmp_path / "nowhere")  # dangling
    before = listing(tmp_path)
    directory = {"file": "a-file", "under-a-file": "a-file/sub", "dangling-link": "."}[place]
    line = one_error_line(run_cli("new-backend", "abc", "--directory", str(tmp_path / directory)))
    assert {
        "file": "is not a directory",
        "under-a-file": "Not a directory",
        "dangling-link": "exists already",
    }[place] in line
    assert listing(tmp_path) == before
    assert (tmp_path / "a-file").read_text() == "the author's"
