"""The cold-start recorder: phases timed, logged as ``cold start: <phase> <seconds> s``, and
told apart when a memory snapshot restored them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from promptwire.modal import coldstart


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    coldstart.reset()
    yield
    coldstart.reset()


def test_a_phase_is_timed_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="promptwire.modal.coldstart")
    with coldstart.phase("imports"):
        time.sleep(0.05)
    (phase,) = coldstart.phases()
    assert phase.name == "imports" and phase.seconds >= 0.05
    assert not phase.from_snapshot
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == f"cold start: imports {phase.seconds:.3f} s"


def test_a_failed_phase_is_logged_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError), coldstart.phase("model_load"):
        raise RuntimeError("no GPU")
    assert coldstart.phases() == []
    assert "cold start: model_load failed after" in caplog.text


def test_phases_from_before_a_snapshot_restore_are_marked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Modal gives a restored container a new task id: what ran before the snapshot ran in
    the container that made it."""
    monkeypatch.setenv("MODAL_TASK_ID", "ta-snapshotting")
    coldstart.record("imports", 2.0)
    monkeypatch.setenv("MODAL_TASK_ID", "ta-restored")
    coldstart.record("model_load", 10.0)
    imports, load = coldstart.phases()
    assert imports.from_snapshot and not load.from_snapshot
    assert coldstart.summary() == (
        "10.000 s in this container (model_load 10.000 s); restored from a memory snapshot "
        "made after imports 2.000 s"
    )


def test_the_process_start_is_recorded_where_proc_says_it() -> None:
    coldstart.record_process_start()
    (phase,) = coldstart.phases()
    assert phase.name == "process_start" and phase.seconds > 0
