"""A reply's raw bytes, decoded (gzip, deflate) with bounded memory, without I/O.

httpx inflates a compressed reply without a cap: a few hundred kilobytes of gzip on the wire can
become gigabytes in memory. The client reads raw bytes and decodes them here instead, never more
than ``PIECE_BYTES`` at a time, and never more than ``limit`` bytes in all.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

#: What the client tells servers it can decode.
ACCEPT_ENCODING = "gzip, deflate"
#: The most bytes one decoding step produces.
PIECE_BYTES = 1 << 16


class ReplyTooLarge(ValueError):
    """The decoded reply is larger than the limit."""


class UnsupportedEncoding(ValueError):
    """The reply is encoded in a way the client did not offer to decode."""


class BodyDecoder:
    """Feed raw bytes with ``feed``, then call ``flush``; both yield decoded pieces."""

    def __init__(self, content_encoding: str, limit: int | None) -> None:
        encoding = content_encoding.strip().lower()
        self._limit = limit
        self._size = 0
        self._inflater: zlib._Decompress | None
        self._deflate_unknown = False  # "deflate" is zlib-wrapped or raw: decided on first bytes
        if encoding in ("", "identity"):
            self._inflater = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj()
            self._deflate_unknown = True
        else:
            raise UnsupportedEncoding(
                f"the reply is encoded as {encoding!r}; the client asked for {ACCEPT_ENCODING}"
            )

    def feed(self, raw: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            for start in range(0, len(raw), PIECE_BYTES):
                yield self._counted(raw[start : start + PIECE_BYTES])
            return
        while raw:
            try:
                piece = self._inflater.decompress(raw, PIECE_BYTES)
            except zlib.error:
                if not self._deflate_unknown:
                    raise
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no header
                self._deflate_unknown = False
                continue
            self._deflate_unknown = False
            raw = self._inflater.unconsumed_tail
            if piece:
                yield self._counted(piece)

    def flush(self) -> Iterator[bytes]:
        if self._inflater is not None and (rest := self._inflater.flush()):
            yield self._counted(rest)

    def _counted(self, piece: bytes) -> bytes:
        self._size += len(piece)
        if self._limit is not None and self._size > self._limit:
            raise ReplyTooLarge(f"the reply is larger than {self._limit} bytes")
        return piece
