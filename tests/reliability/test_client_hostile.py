"""The client against hostile or broken servers: credentials across redirects, secrets that cannot
travel in a header, replies that would exhaust memory, keep-alives that carry no text, and JSON
that Python's parser does not take as the protocol does. Every call mode, on loopback."""

from __future__ import annotations

import asyncio
import traceback
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.client._transport.errors import Redactor, Translate
from promptwire.errors import (
    ConfigurationError,
    EndpointError,
    EndpointTimeoutError,
    OverloadedError,
    ProtocolError,
    ReplyTooLargeError,
)

from tests.reliability.faults import KEEPALIVES, FaultServer, fault_server, gzip_bomb
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

MODES = ("invoke", "ainvoke", "stream", "astream")
STREAMING = ("stream", "astream")
TIMEOUT = 1.0
MARGIN = 10.0
SECRET = "tok-9f8e7d6c5b4a"
MODAL_KEY = "wk-modal-key-1234"
MODAL_SECRET = "ws-modal-secret-5678"


def call(url: str, mode: str, **options: Any) -> str:
    llm = PromptwireLLM(**{"endpoint_url": url, "timeout": TIMEOUT, "max_retries": 0, **options})
    if mode == "invoke":
        return llm.invoke("hi")
    if mode == "stream":
        return "".join(llm.stream("hi"))

    async def run() -> str:
        if mode == "ainvoke":
            return await llm.ainvoke("hi")
        return "".join([piece async for piece in llm.astream("hi")])

    return asyncio.run(run())


@pytest.fixture(scope="module")
def other_origin() -> Iterator[FaultServer]:
    """A second server on another port: another origin, which records what it is sent."""
    with fault_server() as server:
        yield server


CREDENTIALS = {"api_key": SECRET, "modal_key": MODAL_KEY, "modal_secret": MODAL_SECRET}


# -- 1. credentials never cross origins on a redirect ----------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_303_to_another_origin_is_followed_without_credentials(
    faults: FaultServer, other_origin: FaultServer, mode: str
) -> None:
    target = other_origin.url("ok")
    assert call(faults.url("redirect-to", code=303, to=target), mode, **CREDENTIALS) == "ok"
    [received] = other_origin.headers_of(target)
    assert not {"authorization", "modal-key", "modal-secret"} & set(received)
    assert SECRET not in str(received) and MODAL_SECRET not in str(received)


@pytest.mark.parametrize("mode", MODES)
def test_a_303_within_the_origin_keeps_the_credentials(faults: FaultServer, mode: str) -> None:
    target = faults.url("ok")
    assert call(faults.url("redirect-to", code=303, to=target), mode, **CREDENTIALS) == "ok"
    [received] = faults.headers_of(target)
    assert received["authorization"] == f"Bearer {SECRET}"
    assert (received["modal-key"], received["modal-secret"]) == (MODAL_KEY, MODAL_SECRET)


@pytest.mark.parametrize("code", [307, 308])
@pytest.mark.parametrize("mode", MODES)
def test_a_307_or_308_to_another_origin_is_refused_before_anything_is_sent(
    faults: FaultServer, other_origin: FaultServer, mode: str, code: int
) -> None:
    """They would re-send the prompt itself to the other origin."""
    target = other_origin.url("ok")
    with pytest.raises(ProtocolError, match="another origin"):
        call(faults.url("redirect-to", code=code, to=target), mode, **CREDENTIALS)
    assert other_origin.count(target) == 0


def test_the_chat_models_health_probe_does_not_carry_credentials_away(
    faults: FaultServer, other_origin: FaultServer
) -> None:
    """A v1 server refusing ``messages`` makes the chat model ask ``/health``, which redirects."""
    target = other_origin.url("ok")
    endpoint = faults.url("redirect-to", code=303, to=target)  # its /health redirects too
    chat = ChatPromptwire(endpoint_url=endpoint, **CREDENTIALS)  # type: ignore[arg-type]
    probe = chat.client.health()
    assert probe is not None and probe.status_code == 200
    assert asyncio.run(chat.client.ahealth()) is not None
    assert [h["authorization"] for h in faults.headers_of(endpoint.split("?")[0] + "/health")] == [
        f"Bearer {SECRET}"
    ] * 2
    received = other_origin.headers_of(target)
    assert len(received) == 2
    assert not {"authorization", "modal-key", "modal-secret"} & set().union(*received)


# -- 2. secrets that cannot travel in a header -------------------------------------------------

BAD_SECRETS = [
    SECRET + "\n",
    SECRET + "\r\n",
    " " + SECRET,
    "tok en",
    SECRET + "\x00",
    SECRET + "\x1b[2J",
    "tök-" + SECRET,
]  # an empty one is none (tests/unit/test_settings.py), as the server reads it


@pytest.mark.parametrize("bad", BAD_SECRETS, ids=repr)
@pytest.mark.parametrize("field", ["api_key", "modal_key", "modal_secret"])
def test_a_secret_that_cannot_be_a_header_is_refused_without_being_shown(
    field: str, bad: str
) -> None:
    for model in (PromptwireLLM, ChatPromptwire):
        with pytest.raises(ConfigurationError) as caught:
            model(endpoint_url="http://127.0.0.1:1/", **{field: bad})
        shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
        assert field in str(caught.value)
        assert SECRET not in shown and "tok en" not in shown


@pytest.mark.parametrize("bad", [SECRET + "\n", "tök-" + SECRET], ids=repr)
def test_the_same_secret_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("PROMPTWIRE_API_KEY", bad)
    with pytest.raises(ConfigurationError, match="api_key") as caught:
        PromptwireLLM(endpoint_url="http://127.0.0.1:1/")
    assert SECRET not in "".join(traceback.format_exception(caught.value))


def test_transport_errors_are_redacted_and_not_chained() -> None:
    """httpx quotes a header it refuses; whatever it says, the secret does not come through."""
    translate = Translate("http://x/", Redactor([SECRET]))
    with pytest.raises(EndpointError) as caught, translate:
        raise httpx.LocalProtocolError(f"Illegal header value b'Bearer {SECRET}'")
    shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert SECRET not in shown and "**********" in shown
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# -- 9. memory: every reply is bounded once decoded --------------------------------------------


def peak_allocated_mib(work: Any) -> float:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / (1 << 20)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("mode", MODES)
def test_a_gzip_bomb_is_stopped_at_the_reply_limit(faults: FaultServer, mode: str) -> None:
    url = faults.url("gzip-bomb", mib=256)  # ~256 KB on the wire
    gzip_bomb(256)  # made before the clock starts

    def bomb() -> None:
        with pytest.raises(ReplyTooLargeError, match="larger than"):
            call(url, mode, max_reply_bytes=4 << 20, timeout=30)

    assert peak_allocated_mib(bomb) < 64  # inflated without a cap: 256 MiB and more


@pytest.mark.parametrize("mode", MODES)
def test_a_huge_reply_is_stopped_at_the_reply_limit(faults: FaultServer, mode: str) -> None:
    def huge() -> None:
        with pytest.raises(ReplyTooLargeError):
            call(faults.url("huge", mib=200), mode, max_reply_bytes=4 << 20, timeout=30)

    assert peak_allocated_mib(huge) < 64


@pytest.mark.parametrize("mode", STREAMING)
def test_an_sse_line_that_never_ends_is_stopped(faults: FaultServer, mode: str) -> None:
    def endless() -> None:
        with pytest.raises(ReplyTooLargeError, match="line"):
            call(faults.url("endless-line"), mode, max_reply_bytes=4 << 20, timeout=30)

    assert peak_allocated_mib(endless) < 64


def test_the_reply_limit_is_a_checked_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PromptwireLLM(endpoint_url="http://x/").client.config.max_reply_bytes == 32 << 20
    monkeypatch.setenv("PROMPTWIRE_MAX_REPLY_BYTES", "2048")
    assert PromptwireLLM(endpoint_url="http://x/").client.config.max_reply_bytes == 2048
    with pytest.raises(ValueError, match="max_reply_bytes"):
        PromptwireLLM(endpoint_url="http://x/", max_reply_bytes=0)


# -- 10. keep-alives that carry no text do not hold a stalled stream open -------------------


@pytest.mark.parametrize("kind", sorted(KEEPALIVES))
@pytest.mark.parametrize("mode", STREAMING)
def test_keepalives_do_not_reset_the_stream_timeout(
    faults: FaultServer, mode: str, kind: str
) -> None:
    loop = asyncio.new_event_loop()
    started = loop.time()
    with pytest.raises(EndpointTimeoutError):
        call(faults.url("stream-keepalives", kind=kind), mode)
    assert loop.time() - started < TIMEOUT + MARGIN
    loop.close()


# -- 11. JSON as the protocol means it --------------------------------------------------------


@pytest.mark.parametrize("shape", ["reply", "event"])
@pytest.mark.parametrize("mode", MODES)
def test_deep_nesting_is_a_protocol_error(faults: FaultServer, mode: str, shape: str) -> None:
    if shape == "event" and mode not in STREAMING:
        pytest.skip("events come only in streams")
    with pytest.raises(ProtocolError):
        call(
            faults.url("odd-json", kind="nested", **({"as": "event"} if shape == "event" else {})),
            mode,
        )


@pytest.mark.parametrize("mode", MODES)
def test_a_huge_integer_in_an_unknown_key_is_ignored(faults: FaultServer, mode: str) -> None:
    """The protocol says unknown keys are ignored; Python's int refuses 4,301+ digits."""
    query = {"as": "event"} if mode in STREAMING else {}
    assert call(faults.url("odd-json", kind="bigint", **query), mode) == "ok"


@pytest.mark.parametrize("mode", MODES)
def test_nan_is_not_json(faults: FaultServer, mode: str) -> None:
    query = {"as": "event"} if mode in STREAMING else {}
    with pytest.raises(ProtocolError):
        call(faults.url("odd-json", kind="nan", **query), mode)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("mode", MODES)
def test_a_non_finite_retry_after_is_ignored(faults: FaultServer, mode: str, value: str) -> None:
    with pytest.raises(OverloadedError) as caught:
        call(faults.url("status", code=503, retry_after=value), mode)
    assert caught.value.retry_after is None
