"""An integer's (or a whole-bounded number's) ``minimum``/``maximum`` and their exclusive forms
as GBNF digit ranges, so a grammar writes only numbers in bounds (``promptwire_llamacpp.grammar``).
"""

from __future__ import annotations

from typing import Any

from promptwire_llamacpp.grammar_checks import bounds

#: Digits of an integer with no bound on that side: the converter's own numbers' 16.
_DIGITS = 16


def number_rule(schema: dict[str, Any]) -> str:
    """GBNF alternatives (no ``space``) for the integers, or whole-bounded numbers, of
    ``schema``: a number's fraction follows only a whole part whose every fraction is in
    bounds (no exponents: a narrower grammar, never a wider one)."""
    low, high, lowest, highest = bounds(schema)
    alternatives = _integer_alternatives(low, high)
    if schema.get("type") == "number":
        fraction = '"." decimal-part'
        # "k.f" lies in [k, k+1): k an integer allowed, k+1 at most the upper bound.
        first = max(low or 0, 0)
        top = None if highest is None else highest - 1
        if top is None or top >= first:
            alternatives += [[*digits, fraction] for digits in _natural_alternatives(first, top)]
        # "-k.f" lies in (-(k+1), -k]: -k an integer allowed, -(k+1) at least the lower bound.
        nearest = 0 if high is None else max(0, -high)
        farthest = None if lowest is None else -lowest - 1
        if farthest is None or farthest >= nearest:
            alternatives += [
                ['"-"', *digits, fraction] for digits in _natural_alternatives(nearest, farthest)
            ]
    return " | ".join(" ".join(alternative) for alternative in alternatives)


def _integer_alternatives(low: int | None, high: int | None) -> list[list[str]]:
    limit = 10**_DIGITS
    low = None if low is not None and low <= -limit else low
    high = None if high is not None and high >= limit else high
    alternatives: list[list[str]] = []
    if high is None or high >= 0:
        alternatives += _natural_alternatives(max(low or 0, 0), high)
    if low is None or low < 0:
        nearest = 1 if high is None or high >= 0 else -high
        alternatives += [
            ['"-"', *digits]
            for digits in _natural_alternatives(nearest, None if low is None else -low)
        ]
    return alternatives


def _natural_alternatives(low: int, high: int | None) -> list[list[str]]:
    """The decimal numerals (no leading zeros) from ``low`` to ``high`` (None: up to 16 digits,
    or the length of ``low``), as sequences of GBNF items, one a length and a digit split."""
    if high is not None and high >= 10**_DIGITS:
        high = None
    longest = max(_DIGITS, len(str(low))) if high is None else len(str(high))
    alternatives: list[list[str]] = []
    for length in range(len(str(low)), longest + 1):
        first = max(low, 10 ** (length - 1) if length > 1 else 0)
        last = 10**length - 1 if high is None else min(high, 10**length - 1)
        if first <= last:
            alternatives += _same_length(str(first), str(last))
    return alternatives


def _same_length(low: str, high: str) -> list[list[str]]:
    """Numerals of one length from ``low`` to ``high`` (``low <= high``): a common prefix,
    then the first digit where they part: ``low``'s with its tail up to 9s, the digits between
    with any tail, ``high``'s with its tail from 0s."""
    common = 0
    while common < len(low) and low[common] == high[common]:
        common += 1
    prefix = [f'"{low[:common]}"'] if common else []
    if common == len(low):
        return [prefix]
    first, last = int(low[common]), int(high[common])
    low_tail, high_tail = low[common + 1 :], high[common + 1 :]
    size = len(low_tail)
    alternatives: list[list[str]] = []
    from_first = low_tail == "0" * size
    to_last = high_tail == "9" * size
    if not from_first:
        alternatives += [
            [*prefix, f'"{first}"', *tail] for tail in _same_length(low_tail, "9" * size)
        ]
    start, end = first + (not from_first), last - (not to_last)
    if start <= end:
        digit = f'"{start}"' if start == end else f"[{start}-{end}]"
        alternatives.append([*prefix, digit, *["[0-9]"] * size])
    if not to_last:
        alternatives += [
            [*prefix, f'"{last}"', *tail] for tail in _same_length("0" * size, high_tail)
        ]
    return alternatives
