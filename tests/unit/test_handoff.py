"""A worker engine's events handed off (``WorkerEngine.generate_to``): taken straight from the
worker thread, a forward pass at a time, under the request's limits, as the engine process
sends them to the server. The same events as ``Engine.generate`` gives; a request that reaches
its end or is cancelled leaves the batch at once; stopping or a failing pass still ends every
request with its error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import pytest
from promptwire.engine import (
    EngineError,
    EngineEvent,
    EngineNotReady,
    Finish,
    TextChunk,
)
from promptwire.engine.handoff import HandedOff
from promptwire.engine.worker import FAILED_PASSES_IN_A_ROW
from promptwire.protocol import FinishReason, PromptRequest
from promptwire.testing import arun_engine

from tests.support.waiting import wait_until
from tests.support.word_engine import WordEngine


class Deliveries:
    """What the hand-off delivered, pass by pass (from the worker thread)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[Hashable, EngineEvent | EngineError]]] = []
        self._changed = threading.Condition()

    def __call__(self, batch: list[tuple[Hashable, EngineEvent | EngineError]]) -> None:
        with self._changed:
            self.batches.append(batch)
            self._changed.notify_all()

    def of(self, key: Hashable) -> list[EngineEvent | EngineError]:
        with self._changed:
            return [item for batch in self.batches for k, item in batch if k == key]

    def wait_for(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(check, timeout), "the events did not come"

    def wait_for_end(self, key: Hashable, timeout: float = 10.0) -> list[Any]:
        def ended() -> bool:
            items = [item for batch in self.batches for k, item in batch if k == key]
            return bool(items) and isinstance(items[-1], Finish | EngineError)

        self.wait_for(ended, timeout)
        return self.of(key)


@pytest.fixture
def engine() -> Iterator[WordEngine]:
    engine = WordEngine()
    engine.load()
    yield engine
    engine.unload()


def _hand_off(engine: WordEngine, body: dict[str, Any], key: Hashable) -> HandedOff:
    request = PromptRequest.model_validate(body)
    handed = engine.generate_to(request, engine.prepare(request), key)
    assert handed is not None
    handed.start()
    return handed


BODIES: list[dict[str, Any]] = [
    {"prompt": "one two three four"},
    {"prompt": "one two three four", "max_tokens": 2},
    {"prompt": "alpha beta STOP gamma delta", "stop": ["STOP"]},
    {"prompt": "alpha beta gamma", "stop": ["ta ga"]},  # across two words
    {"prompt": "alpha beta gamma", "stop": ["mma"]},  # in the last word
    {"prompt": "alpha beta gamma", "stop": ["zeta"], "max_tokens": 3},
]


async def test_handed_off_events_equal_generates(engine: WordEngine) -> None:
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    for key, body in enumerate(BODIES):
        request = PromptRequest.model_validate(body)
        expected = [event async for event in engine.generate(request)]
        _hand_off(engine, body, key)
        assert deliveries.wait_for_end(key) == expected, body
        run = await arun_engine(engine, body)  # and the finish reason is the one it says
        assert run.finish == expected[-1]
    finishes = [deliveries.of(key)[-1] for key in range(len(BODIES))]
    assert [(f.finish_reason, f.stop_sequence) for f in finishes] == [
        (FinishReason.STOP, None),
        (FinishReason.LENGTH, None),
        (FinishReason.STOP, "STOP"),
        (FinishReason.STOP, "ta ga"),
        (FinishReason.STOP, "mma"),
        (FinishReason.STOP, None),  # the engine's own end, at max_tokens exactly
    ]
    assert "".join(e.text for e in deliveries.of(3) if isinstance(e, TextChunk)) == "alpha be"


def test_a_forward_pass_is_one_delivery(engine: WordEngine) -> None:
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    for key in range(3):
        _hand_off(engine, {"prompt": "a b c d e f @0.02"}, key)
    for key in range(3):
        deliveries.wait_for_end(key)
    worker = engine.worker
    assert worker is not None
    assert len(deliveries.batches) == worker.passes
    for batch in deliveries.batches:  # one word of each request a pass
        words = [key for key, item in batch if isinstance(item, TextChunk)]
        assert len(words) == len(set(words))
    assert max(len(batch) for batch in deliveries.batches) >= 3  # the three in one pass


def _wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_stop_sequence_frees_the_request_in_the_next_pass(engine: WordEngine) -> None:
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    words = " ".join(["w"] * 200)
    _hand_off(engine, {"prompt": f"x STOP {words} @0.01", "stop": ["STOP"]}, "k")
    events = deliveries.wait_for_end("k")
    assert events == [
        TextChunk("x"),
        TextChunk(" "),  # what came before the stop sequence in its word
        Finish(FinishReason.STOP, events[-1].usage, "STOP"),
    ]
    worker = engine.worker
    assert worker is not None
    _wait_until(lambda: worker.cancelled == 1 and not worker.active)
    assert worker.passes < 10


def test_a_cancelled_request_gets_nothing_more(engine: WordEngine) -> None:
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    handed = _hand_off(engine, {"prompt": " ".join(["w"] * 200) + " @0.01"}, "k")
    deliveries.wait_for(lambda: len(deliveries.batches) >= 2)
    handed.cancel()
    worker = engine.worker
    assert worker is not None
    _wait_until(lambda: worker.cancelled == 1 and not worker.active)
    got = len(deliveries.of("k"))
    assert got < 200
    time.sleep(0.05)
    assert len(deliveries.of("k")) == got
    assert not any(isinstance(item, Finish) for item in deliveries.of("k"))


def test_stopping_the_engine_ends_handed_off_requests_with_a_503() -> None:
    engine = WordEngine()
    engine.load()
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    _hand_off(engine, {"prompt": " ".join(["w"] * 200) + " @0.01"}, "k")
    deliveries.wait_for(lambda: bool(deliveries.batches))
    engine.unload()
    last = deliveries.wait_for_end("k")[-1]
    assert isinstance(last, EngineNotReady)
    assert last.message == "the server is shutting down"


def test_a_failing_pass_ends_every_request_with_an_error(engine: WordEngine) -> None:
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    _hand_off(engine, {"prompt": " ".join(["w"] * 200) + " @0.01"}, "long")
    _hand_off(engine, {"prompt": "a b !fail c"}, "failing")
    for key in ("long", "failing"):
        last = deliveries.wait_for_end(key)[-1]
        assert type(last) is EngineError
        assert last.message == "the engine stopped unexpectedly"
    with pytest.raises(EngineNotReady, match=r"^the engine is out of order \(RuntimeError\)$"):
        _hand_off(engine, {"prompt": "more"}, "after")
    # What the server says on /health, and what makes an engine process restart.
    assert not engine.ready
    assert engine.out_of_order == "its worker stopped on RuntimeError"
    assert engine.not_ready_reason == (
        "the engine is out of order (its worker stopped on RuntimeError); restart the server"
    )


def test_a_failed_pass_fails_its_requests_and_the_worker_goes_on(engine: WordEngine) -> None:
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    for attempt in range(FAILED_PASSES_IN_A_ROW + 1):  # a pass that works between failures
        _hand_off(engine, {"prompt": "a !flaky"}, ("flaky", attempt))
        last = deliveries.wait_for_end(("flaky", attempt))[-1]
        assert isinstance(last, EngineError)
        assert last.message == "generation failed on the server (RuntimeError)"
        _hand_off(engine, {"prompt": "a b"}, ("fine", attempt))
        assert isinstance(deliveries.wait_for_end(("fine", attempt))[-1], Finish)
    assert engine.ready
    assert engine.out_of_order is None


def test_passes_that_keep_failing_put_the_engine_out_of_order(engine: WordEngine) -> None:
    """An error every pass meets (a GPU left in a failed state) would fail every request while
    the engine said it was ready: after a few failed passes in a row, none working between, the
    worker stops as if it had died, and the server (or Modal) replaces the engine."""
    deliveries = Deliveries()
    engine.hand_off(deliveries)
    for attempt in range(FAILED_PASSES_IN_A_ROW):
        assert engine.ready
        _hand_off(engine, {"prompt": "!flaky"}, attempt)
        last = deliveries.wait_for_end(attempt)[-1]
        assert last.message == "generation failed on the server (RuntimeError)"
    reason = f"RuntimeError in {FAILED_PASSES_IN_A_ROW} passes in a row"
    wait_until(lambda: not engine.ready)
    assert engine.out_of_order == f"its worker stopped on {reason}"
    with pytest.raises(EngineNotReady, match=rf"^the engine is out of order \({reason}\)$"):
        _hand_off(engine, {"prompt": "more"}, "after")
    worker = engine.worker
    assert worker is not None and worker.failures == FAILED_PASSES_IN_A_ROW


def test_without_a_hand_off_nothing_is_handed_off(engine: WordEngine) -> None:
    request = PromptRequest(prompt="a b")
    assert engine.generate_to(request, request, "k") is None
