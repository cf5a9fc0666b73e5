"""The benchmarks' summary chart draws every ratio with a target, whatever its samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import BenchResult, Ratio
from benchmarks.report import plot_summary


def test_the_summary_draws_a_ratio_whose_samples_cross_zero(tmp_path: Path) -> None:
    """An HTTP overhead measured below zero in some rounds (benchmark 11's samples: median
    0.002, between -0.013 and 0.017) once made a negative error bar, and the report failed
    after the run."""
    pytest.importorskip("matplotlib", reason="the bench group: uv sync --group bench")
    overhead = Ratio("HTTP overhead", [0.0171, -0.106, 0.1749, -0.116, -0.0129, 0.0167], 0.05, "<=")
    speed = Ratio("tokens/s", [0.9, 1.0, 1.1], 1.0, ">=")
    result = BenchResult("k", "t", "s", ratios=[overhead, speed])
    plot_summary([result], tmp_path / "summary.png")
    assert (tmp_path / "summary.png").stat().st_size > 0
