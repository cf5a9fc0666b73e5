"""The client's own cut at ``stop``, shared by both LangChain models.

Servers apply ``stop`` themselves; the models cut again so that a server that does not (an
OpenAI-compatible one that ignores it, an old endpoint) never shows the caller a stop sequence.
Where the client cut, the finish reason is ``stop`` whatever the server said.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promptwire.protocol.stops import StopScanner, truncate_at_stop

STOP = "stop"


class StopGuard:
    """One reply's guard: ``whole`` for a whole reply, or ``feed`` each streamed piece and
    ``finish`` once the stream is done."""

    def __init__(self, stops: Sequence[str] | None) -> None:
        self._stops = stops
        self._scanner = StopScanner(stops)

    def whole(self, text: str, finish_reason: Any) -> tuple[str, Any]:
        """A whole reply's text cut at the first stop sequence, and its finish reason."""
        cut, stopped = truncate_at_stop(text, self._stops)
        return cut, STOP if stopped else finish_reason

    def feed(self, text: str) -> str:
        """What of a streamed piece may be shown now (text that could begin a stop is held)."""
        return self._scanner.feed(text)

    def finish(self, finish_reason: Any) -> tuple[str, Any]:
        """The held-back text once the stream is done, and the stream's finish reason."""
        tail = self._scanner.flush()
        return tail, STOP if self._scanner.stopped else finish_reason
