"""Server-sent events from bytes, without I/O and with bounds (the WHATWG event-stream format).

The sync and async clients feed it the reply's bytes as they arrive and get whole events back, so
both decode a stream the same way. A line or an event larger than ``max_event_bytes`` is an
error instead of memory growing until the process dies: a server that never ends a line cannot
make the client hold more than that.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


class EventTooLarge(ValueError):
    """A line or an event of the stream is larger than the decoder's bound."""


@dataclass(frozen=True)
class Event:
    """One dispatched event: its type (``message`` when the stream names none) and its data."""

    event: str
    data: str


class SSEDecoder:
    """Feed bytes with ``feed``; each call returns the events those bytes completed."""

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""  # the unfinished line
        self._after_cr = False  # the last text ended with \r: a \n next belongs to it
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0

    def feed(self, data: bytes) -> list[Event]:
        return self._lines(self._text.decode(data))

    def close(self) -> list[Event]:
        """The end of the stream: an unfinished event is dropped, as the format says."""
        self._lines(self._text.decode(b"", final=True))
        return []

    def _lines(self, text: str) -> list[Event]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        events: list[Event] = []
        *complete, rest = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for piece in complete:
            line, self._line = self._line + piece, ""
            event = self._field(line)
            if event is not None:
                events.append(event)
        self._line += rest
        if len(self._line) > self._max:
            raise EventTooLarge(f"a line of the stream is longer than {self._max} characters")
        return events

    def _field(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                raise EventTooLarge(f"an event of the stream is larger than {self._max} characters")
            self._data.append(value)
        # "id", "retry" and unknown fields change nothing a client of this protocol uses.
        return None

    def _dispatch(self) -> Event | None:
        event, data = self._event or "message", self._data
        self._event, self._data, self._data_size = "", [], 0
        if not data:
            return None  # the format dispatches nothing for an event without data
        return Event(event=event, data="\n".join(data))


__all__ = ["Event", "EventTooLarge", "SSEDecoder"]
