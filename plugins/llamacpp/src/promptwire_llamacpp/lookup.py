"""Prompt lookup: guessing a reply's next tokens from the text it already holds.

A reply that repeats its input (a quote, an edit of a document, code with a small change, a
summary that reuses phrases) goes on, token after token, as the prompt went on after the same
few tokens. The guess is what followed the last place where the reply's last ``NGRAM`` tokens
stood, in the prompt or in the reply so far. The scheduler puts the guessed tokens in the same
forward pass as the token just sampled and keeps those that the sampler then picks itself: the
text is the one it would have written without guessing, in fewer passes.
"""

from __future__ import annotations

#: How many tokens a guess is looked up by. Two matched too often in free text (a question's
#: answer): its guesses were wrong and cost their compute (benchmarks/prompt_lookup.py).
NGRAM = 3


class PromptLookup:
    """The token history of one sequence (its prompt, then its reply), with where each run of
    ``NGRAM`` tokens last stood with a token after it."""

    def __init__(self, prompt: list[int]) -> None:
        self.tokens: list[int] = []
        self._seen: dict[tuple[int, ...], int] = {}
        for token in prompt:
            self.append(token)

    def append(self, token: int) -> None:
        """One more token of the history (the prompt's, or the reply's)."""
        tokens = self.tokens
        if len(tokens) >= NGRAM:  # the run ending here now has a token after it
            self._seen[tuple(tokens[-NGRAM:])] = len(tokens) - NGRAM
        tokens.append(token)

    def guess(self, count: int) -> list[int]:
        """Up to ``count`` tokens that followed the last earlier place of the history's last
        ``NGRAM`` tokens; none if they stood nowhere before."""
        tokens = self.tokens
        start = self._seen.get(tuple(tokens[-NGRAM:])) if len(tokens) > NGRAM else None
        if start is None:
            return []
        return tokens[start + NGRAM : start + NGRAM + count]
