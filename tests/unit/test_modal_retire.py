"""A Modal container steps aside once its engine is out of order (``promptwire.modal.retire``):
watched on a real worker engine whose forward pass raises. Modal's own call is the default and,
outside a container, fails with Modal's error, logged, never raised into the watch."""

from __future__ import annotations

import logging
import time

import pytest
from promptwire.engine import EngineError
from promptwire.modal.retire import OutOfOrderWatch, stop_fetching_inputs
from promptwire.testing import run_engine

from tests.support.word_engine import WordEngine


def _break(engine: WordEngine) -> None:
    with pytest.raises(EngineError, match="the engine stopped unexpectedly"):
        run_engine(engine, {"prompt": "a !fail b"})


def _wait(watch: OutOfOrderWatch) -> None:
    deadline = time.monotonic() + 30
    while watch.retired is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_container_retires_once_when_the_engine_goes_out_of_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = WordEngine()
    engine.load()
    calls: list[float] = []
    watch = OutOfOrderWatch(engine, retire=lambda: calls.append(time.monotonic()), every=0.01)
    watch.start()
    try:
        assert run_engine(engine, {"prompt": "still serving"}).text == "still serving"
        time.sleep(0.1)
        assert calls == [] and watch.retired is None  # a healthy engine is left alone
        with caplog.at_level(logging.ERROR, logger="promptwire.modal.retire"):
            _break(engine)
            _wait(watch)
        time.sleep(0.1)  # the watch has ended: no second call
        assert len(calls) == 1
        assert watch.retired == "its worker stopped on RuntimeError"
        assert "the engine is out of order (its worker stopped on RuntimeError)" in caplog.text
    finally:
        watch.close()
        engine.unload()


def test_by_default_it_is_modals_own_call_which_needs_a_container(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = WordEngine()
    engine.load()
    watch = OutOfOrderWatch(engine, every=0.01)
    watch.start()
    try:
        with caplog.at_level(logging.ERROR, logger="promptwire.modal.retire"):
            _break(engine)
            _wait(watch)
        assert watch.retired is not None
        assert "this container could not stop taking requests" in caplog.text
        assert "Must be called from within a Modal container" in caplog.text
    finally:
        watch.close()
        engine.unload()
    with pytest.raises(RuntimeError, match="within a Modal container"):
        stop_fetching_inputs()


def test_closing_the_watch_ends_its_thread() -> None:
    engine = WordEngine()
    watch = OutOfOrderWatch(engine, retire=lambda: None, every=0.01)
    watch.start()
    watch.close()
    assert watch.retired is None
