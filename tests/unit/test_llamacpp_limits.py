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
from promptwire_llamacpp.runtime import sequence_cells
from promptwire_llamacpp.settings import LlamaCppSettings


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
