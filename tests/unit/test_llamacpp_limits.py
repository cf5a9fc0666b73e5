"""The llama.cpp backend's limits that need no model: the settings it refuses, the cache it sizes,
and how it counts a grammar's breadth."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.support.optional import LLAMACPP_PLUGIN_MISSING

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.grammar import (
    MAX_GRAMMAR_ALTERNATIVES,
    grammar_alternatives,
    schema_alternatives,
)
from promptwire_llamacpp.runtime import (
    LIBGOMP_SPIN_COUNT,
    sequence_cells,
    thread_wait_environment,
)
from promptwire_llamacpp.settings import LlamaCppSettings, ThreadWait


@pytest.mark.parametrize(("parallel", "batch_size"), [(17, 16), (129, 128), (256, 128)])
def test_more_sequences_than_a_batch_holds_are_refused(parallel: int, batch_size: int) -> None:
    with pytest.raises(ValidationError, match=rf"parallel \({parallel}\) is more than batch_size"):
        LlamaCppSettings(parallel=parallel, batch_size=batch_size)


def test_as_many_sequences_as_a_batch_holds_are_fine() -> None:
    settings = LlamaCppSettings(parallel=256, batch_size=256)
    assert settings.parallel == settings.batch_size == 256
    assert LlamaCppSettings().kv_unified is False  # a cache per sequence by default


@pytest.mark.parametrize(
    ("context_size", "cells"), [(16, 256), (256, 256), (300, 512), (2048, 2048), (2049, 2304)]
)
def test_each_sequence_gets_its_context_rounded_as_llama_cpp_rounds_it(
    context_size: int, cells: int
) -> None:
    assert sequence_cells(context_size) == cells


def test_a_grammar_counts_its_branches_rules_and_repetitions_not_its_literals() -> None:
    grammar = (
        'root ::= "{" ("a|b" | [|?*+] | "x"?)* "}"  # a comment | with ? bars\n'
        'item ::= "\\"|\\"" | "y"+\n'
    )
    # 2 rules; root: 2 bars, one ?, one *; item: one bar, one +
    assert grammar_alternatives(grammar) == 8


def test_a_schema_counts_its_enums_branches_and_pattern_bars() -> None:
    schema = {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "shape": {"anyOf": [{"const": "a|b"}, {"type": "string", "pattern": "^(x|y|z)$"}]},
        },
        "default": {"enum": list(range(1000))},  # not a schema: not counted
    }
    assert schema_alternatives(schema) == 3 + 2 + 2
    assert schema_alternatives({"enum": list(range(MAX_GRAMMAR_ALTERNATIVES + 1))}) > (
        MAX_GRAMMAR_ALTERNATIVES
    )


def test_thread_wait_is_a_policy_or_a_spin_count() -> None:
    assert LlamaCppSettings().thread_wait == "auto"
    assert LlamaCppSettings(thread_wait="passive").thread_wait == "passive"
    assert LlamaCppSettings(thread_wait=5000).thread_wait == 5000
    with pytest.raises(ValidationError):
        LlamaCppSettings(thread_wait=-1)
    with pytest.raises(ValidationError):
        LlamaCppSettings(thread_wait="sometimes")


def test_thread_wait_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_LLAMACPP__THREAD_WAIT", "20000")
    assert LlamaCppSettings().thread_wait == 20000
    monkeypatch.setenv("PROMPTWIRE_LLAMACPP__THREAD_WAIT", "spin")
    assert LlamaCppSettings().thread_wait == "spin"


@pytest.mark.parametrize(
    ("wait", "variables"),
    [
        ("passive", {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}),
        (0, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}),
        ("spin", {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(LIBGOMP_SPIN_COUNT)}),
        ("auto", {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(LIBGOMP_SPIN_COUNT)}),
        (12345, {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "12345"}),
    ],
)
def test_thread_wait_becomes_the_openmp_variables(
    wait: ThreadWait, variables: dict[str, str | None]
) -> None:
    assert thread_wait_environment(wait) == variables
