"""A bounded reader for the TLS presentation language of RFC 6962 / RFC 8446 §3.

Every length read from log data is checked against what is left of the buffer before anything is
sliced, so a hostile log can make a parse fail (`EntryError`) but never read past its input or
allocate more than it sent.
"""

from __future__ import annotations

from certpin.lifecycle.ct.errors import EntryError

__all__ = ["Reader"]


class Reader:
    """Reads big-endian integers and length-prefixed vectors from `data[start:end]`."""

    __slots__ = ("data", "pos", "end", "what")

    def __init__(self, data: bytes, what: str, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end
        self.what = what

    def fail(self, problem: str) -> EntryError:
        return EntryError(f"{self.what}: {problem} (at byte {self.pos})")

    def left(self) -> int:
        return self.end - self.pos

    def uint(self, size: int) -> int:
        pos = self.pos
        if pos + size > self.end:
            raise self.fail(f"truncated: a {size}-byte integer runs past the end")
        self.pos = pos + size
        return int.from_bytes(self.data[pos : pos + size], "big")

    def fixed(self, size: int) -> bytes:
        pos = self.pos
        if pos + size > self.end:
            raise self.fail(f"truncated: {size} bytes expected, {self.end - pos} left")
        self.pos = pos + size
        return self.data[pos : pos + size]

    def vector(self, length_size: int, minimum: int = 0) -> bytes:
        """``opaque x<minimum..2^(8*length_size)-1>``: the bytes of a length-prefixed vector."""
        length = self.uint(length_size)
        if length < minimum:
            raise self.fail(f"a vector of {length} bytes is shorter than its minimum {minimum}")
        return self.fixed(length)

    def vector_span(self, length_size: int) -> tuple[int, int]:
        """Like `vector`, but returns (start, end) offsets into `data` instead of a copy."""
        length = self.uint(length_size)
        pos = self.pos
        if pos + length > self.end:
            raise self.fail(f"truncated: a vector of {length} bytes runs past the end")
        self.pos = pos + length
        return pos, pos + length

    def done(self) -> None:
        if self.pos != self.end:
            raise self.fail(f"{self.end - self.pos} unexpected trailing bytes")
