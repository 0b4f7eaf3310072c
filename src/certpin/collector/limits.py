"""Ingest limits: every report body is attacker-controlled, so bound memory and time first.

* `read_body` stops reading as soon as the stream passes the byte limit (a lying or missing
  ``Content-Length`` cannot make the collector buffer more than ``max_bytes + one chunk``).
* `parse_json` rejects NaN/Infinity, duplicate keys (two parsers could disagree on which wins),
  nesting deeper than ``max_depth`` and more than ``max_items`` values in total.
* `TokenBucket` rate-limits each client address; the table of buckets is itself bounded (LRU).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from certpin._errors import CertpinError

__all__ = [
    "IngestLimits",
    "LimitError",
    "TokenBucket",
    "check_nesting",
    "parse_json",
    "read_body",
]


class LimitError(CertpinError, ValueError):
    """A request broke an ingest limit; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class IngestLimits:
    """Bounds applied to every ``POST /reports``. Defaults are documented in docs/collector.md.

    Attributes:
        max_bytes: request body limit (64 KiB).
        max_depth: JSON nesting limit (a report is at most 3 deep; 8 leaves room for extensions).
        max_items: total JSON values (objects, arrays, scalars) in one body.
        max_fields: keys in the top-level object.
        max_string: length of any string that is not a certificate PEM.
        max_chain: certificates per chain (RFC 5280 paths this long are already unusual).
        max_pins: entries in ``known-pins``.
    """

    max_bytes: int = 64 * 1024
    max_depth: int = 8
    max_items: int = 2000
    max_fields: int = 64
    max_string: int = 2048
    max_chain: int = 10
    max_pins: int = 64


async def read_body(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """Collect a request body, failing with 413 the moment it exceeds `max_bytes`."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise LimitError(f"request body exceeds {max_bytes} bytes", 413)
        parts.append(chunk)
    return b"".join(parts)


def _reject_constant(name: str) -> Any:
    raise LimitError(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 is valid JSON, but not a finite number
        raise LimitError(f"JSON number {text[:32]} is out of range")
    return value


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise LimitError(f"duplicate JSON key {key[:64]!r}")
        out[key] = value
    return out


#: One decoder for every body: ``json.loads`` with hooks builds a decoder and its scanner on
#: every call (≈ 5 µs of a ≈ 27 µs parse of a 3 KiB report).
_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_reject_constant, parse_float=_finite_float
)


def decode_body(body: bytes) -> str:
    """A request body as text: UTF-8 (RFC 8259 §8.1), else a 400 naming the first bad byte."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LimitError(f"body is not UTF-8 (byte {exc.start})") from None


def parse_json(body: bytes | str, limits: IngestLimits) -> dict[str, Any]:
    """Parse a report body (bytes, or text from `decode_body`) into a dict, enforcing the
    structural limits."""
    text = body if isinstance(body, str) else decode_body(body)
    # Nesting is bounded twice: the C parser itself stops a "[[[[…" body at the interpreter's
    # recursion limit (RecursionError, well below the 64 KiB body's worst case), and the walk
    # below rejects anything deeper than max_depth — without a per-character Python loop.
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise LimitError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise LimitError(f"JSON nested deeper than {limits.max_depth} levels") from None
    except LimitError:
        raise
    except ValueError as exc:  # an integer beyond Python's int/str conversion limit
        raise LimitError(f"invalid JSON number: {str(exc).split(':')[0][:120]}") from None
    count = _walk(data, limits.max_depth)
    if not isinstance(data, dict):
        raise LimitError("a report must be a JSON object")
    if len(data) > limits.max_fields:
        raise LimitError(f"too many fields ({len(data)} > {limits.max_fields})")
    if count > limits.max_items:
        raise LimitError(f"too many JSON values ({count} > {limits.max_items})")
    return data


def check_nesting(data: Any, max_depth: int) -> None:
    """Raise `LimitError` if `data` nests containers deeper than `max_depth` (iteratively: it
    is what lets a caller hand the value to a recursive encoder safely)."""
    _walk(data, max_depth)


def _walk(data: Any, max_depth: int) -> int:
    """Count the JSON values of `data` (objects, arrays, scalars; not keys), iteratively,
    failing when a container is nested deeper than `max_depth` (the top level is depth 1).

    Only containers go on the stack; a container's children are counted in one step (json.loads
    yields exact dict/list/str/int/float/bool/None, so `type(...) in` is exact)."""
    if type(data) not in _CONTAINERS:
        return 1
    count = 1
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise LimitError(f"JSON nested deeper than {max_depth} levels")
        children = value.values() if type(value) is dict else value
        count += len(children)
        for child in children:
            if type(child) in _CONTAINERS:
                stack.append((child, depth + 1))
    return count


_CONTAINERS = (dict, list)


class TokenBucket:
    """Per-key token buckets: `rate` tokens per second, at most `burst` stored.

    At most `max_keys` buckets are kept (least recently used evicted), so a flood of source
    addresses costs bounded memory; an evicted source simply starts again with a full bucket.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token for `key`: 0.0 if allowed, else the seconds until one is available."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait
