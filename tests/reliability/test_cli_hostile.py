"""The CLI and the OpenAI adapter against hostile servers: a reply no terminal can print, an
unhashable ``finish_reason``, a 20 MiB error message, and ``promptwire status`` reading deep
JSON, text that is not Prometheus', non-finite values, a dripped or a 200 MB answer.

Before these fixes: ``promptwire invoke`` ended in a ``UnicodeEncodeError`` traceback for a
lone surrogate; the adapter raised a bare ``TypeError`` (and the CLI printed its traceback) for a
list ``finish_reason``; a 20 MiB error message became a 20-million-character error; ``status``
printed tracebacks (``RecursionError``, ``ValueError``), took 15.8 s for ``--timeout 2`` against
a dripped answer and 1.25 GiB for a 200 MB ``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from promptwire import PromptwireLLM
from promptwire.cli._status import read_status
from promptwire.errors import HTTPStatusError, ProtocolError

from tests.reliability.faults import HUGE_MESSAGE_MIB, FaultServer
from tests.reliability.test_client_hostile import MODES, peak_allocated_mib
from tests.support.installed_plugin import run_cli
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

MARGIN = 10.0
"""Seconds allowed on top of a deadline: generous, for a loaded two-core machine."""


def _one_error_line(result: Any) -> str:
    """The CLI failed with exactly one line on stderr, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    return str(line)


def call(url: str, mode: str, **options: Any) -> str:
    llm = PromptwireLLM(
        **{"endpoint_url": url, "timeout": 30, "max_retries": 0, "backend": "openai", **options}
    )
    if mode == "invoke":
        return llm.invoke("hi")
    if mode == "stream":
        return "".join(llm.stream("hi"))

    async def run() -> str:
        if mode == "ainvoke":
            return await llm.ainvoke("hi")
        return "".join([piece async for piece in llm.astream("hi")])

    return asyncio.run(run())


# -- 2. a reply the terminal cannot print -------------------------------------------------------


@pytest.mark.parametrize("options", [(), ("--stream",), ("--raw",), ("--stream", "--raw")])
def test_invoke_prints_a_lone_surrogate_replaced(
    faults: FaultServer, options: tuple[str, ...]
) -> None:
    query = {"as": "event"} if "--stream" in options else {}
    result = run_cli("invoke", "hi", "--url", faults.url("surrogate", **query), *options)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stdout == "before \ufffd after\n"


def test_invoke_on_a_terminal_without_unicode_replaces_what_it_cannot_show(
    faults: FaultServer,
) -> None:
    env = {"PYTHONIOENCODING": "ascii"}
    result = run_cli("invoke", "hi", "--url", faults.url("surrogate"), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "before ? after\n"


# -- 5. the OpenAI adapter ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("mode", MODES)
def test_an_unhashable_finish_reason_is_a_protocol_error(
    faults: FaultServer, mode: str, kind: str
) -> None:
    with pytest.raises(ProtocolError, match="finish_reason"):
        call(faults.url("openai-finish", kind=kind), mode)


@pytest.mark.parametrize("stream", [(), ("--stream",)])
def test_invoke_says_an_unhashable_finish_reason_in_one_line(
    faults: FaultServer, stream: tuple[str, ...]
) -> None:
    url = faults.url("openai-finish", kind="list")
    result = run_cli("invoke", "hi", "--backend", "openai", "--url", url, *stream)
    assert result.returncode == 1
    assert "finish_reason" in _one_error_line(result)


@pytest.mark.parametrize("backend", [{}, {"backend": "openai"}])
@pytest.mark.parametrize("mode", MODES)
def test_a_huge_error_message_is_cut_and_the_body_kept(
    faults: FaultServer, mode: str, backend: dict[str, str]
) -> None:
    with pytest.raises(HTTPStatusError) as caught:
        call(faults.url("huge-error"), mode, **backend)
    error = caught.value
    assert error.status_code == 400
    assert len(str(error)) < 2000, len(str(error))
    assert "characters in all" in str(error)
    assert error.body is not None and len(error.body) > HUGE_MESSAGE_MIB << 20


def test_invoke_says_a_huge_error_in_one_short_line(faults: FaultServer) -> None:
    result = run_cli("invoke", "hi", "--url", faults.url("huge-error"))
    assert result.returncode == 1
    assert len(_one_error_line(result)) < 2000


# -- 5. promptwire status -----------------------------------------------------------------------


def _status_url(faults: FaultServer, kind: str) -> str:
    return faults.url("status-odd") + f"/{kind}/"


@pytest.mark.parametrize(
    ("kind", "row", "said"),
    [
        ("nested", "health", "without a JSON object"),
        ("not-prometheus", "metrics", "not Prometheus text"),
        ("nan", "requests", None),
        ("inf", "requests", None),
    ],
)
def test_status_reads_odd_answers_without_a_traceback(
    faults: FaultServer, kind: str, row: str, said: str | None
) -> None:
    result = run_cli("status", _status_url(faults, kind))
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr == ""
    rows = {line[:12].strip(): line[13:] for line in result.stdout.splitlines()}
    if said is not None:
        assert said in rows[row], result.stdout
    else:  # a value that is not a number is not shown as one
        assert row not in rows, result.stdout
        shown = [text.lower() for label, text in rows.items() if label != "endpoint"]
        assert not any("nan" in text or "inf" in text for text in shown), result.stdout


@pytest.mark.parametrize("kind", ["dripped", "dripped-health"])
def test_status_timeout_is_a_total_deadline(faults: FaultServer, kind: str) -> None:
    url = _status_url(faults, kind)
    result = run_cli("status", url, "--timeout", "2")
    ended = time.monotonic()
    assert result.returncode == 1
    assert "no answer within 2 s" in _one_error_line(result)
    # Timed from the first request, not from the interpreter's start: at load 10 and more the
    # CLI's imports alone took seconds, and the 2 s deadline starts after them.
    first = faults.first_arrival(url)
    assert first is not None
    assert ended - first < 2 + MARGIN, f"took {ended - first:.1f} s"  # the drip lasts 30 s


def test_status_reads_a_huge_metrics_answer_with_bounded_memory(faults: FaultServer) -> None:
    url = _status_url(faults, "huge")

    def read() -> None:
        with pytest.raises(ProtocolError, match="larger than 16 MiB"):
            read_status(url, timeout=60)

    assert peak_allocated_mib(read) < 100
    result = run_cli("status", url)
    assert result.returncode == 1
    assert "larger than 16 MiB" in _one_error_line(result)
