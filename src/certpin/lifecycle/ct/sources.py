"""Reading a log, verified: one class per API, the same four questions for both.

- `head()`: the latest tree head, its signature verified with the log list's key;
- `consistency(first, second)`: a consistency proof between two tree sizes (RFC 6962's
  ``get-sth-consistency``; for a tiled log, computed from the hash tiles of the verified tree);
- `compact_range(head)`: the Merkle frontier of `head`'s tree, checked against its root (to
  start watching at the end of a log without downloading it);
- `entries(start, end)`: the entries in ``[start, end)``, fetched in parallel batches, yielded
  in order.

Nothing a source returns is trusted until the watcher has checked it against a verified tree
head (`certpin.lifecycle.ct.merkle`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Protocol
from urllib.parse import quote

from certpin.lifecycle.ct import merkle
from certpin.lifecycle.ct.checkpoint import parse_checkpoint
from certpin.lifecycle.ct.entries import Entry, parse_data_tile, parse_get_entries
from certpin.lifecycle.ct.errors import LogError
from certpin.lifecycle.ct.http import HttpClient
from certpin.lifecycle.ct.loglist import LogInfo
from certpin.lifecycle.ct.sth import TreeHead, parse_sth, verify_tree_head

__all__ = [
    "BATCH_SIZE",
    "LogSource",
    "Rfc6962Source",
    "TiledSource",
    "open_source",
    "tile_path",
]

#: entries asked for per get-entries request (logs may answer with fewer).
BATCH_SIZE = 1000
#: the largest get-entries response read.
MAX_ENTRIES_RESPONSE = 64 * 1024 * 1024
#: the largest data tile read (256 entries).
MAX_DATA_TILE = 64 * 1024 * 1024
#: the largest issuer certificate read.
MAX_ISSUER = 1024 * 1024
_MAX_PROOF_RESPONSE = 64 * 1024
_TILE_WIDTH = 256


class LogSource(Protocol):
    info: LogInfo

    def head(self) -> TreeHead: ...
    def consistency(self, first: int, second: int, head: TreeHead) -> list[bytes]: ...
    def compact_range(self, head: TreeHead) -> merkle.CompactRange: ...
    def entries(self, start: int, end: int, head: TreeHead) -> Iterator[list[Entry]]: ...
    def chain(self, entry: Entry) -> tuple[bytes, list[bytes]]: ...


def open_source(info: LogInfo, http: HttpClient, executor: Executor) -> LogSource:
    if info.kind == "tiled":
        return TiledSource(info, http, executor)
    return Rfc6962Source(info, http, executor)


def _get(http: HttpClient, url: str, limit: int, what: str) -> bytes:
    status, body = http.get(url, limit)
    if status != 200:
        raise LogError(f"{url}: {what}: HTTP {status}")
    return body


def _b64_list(body: bytes, name: str, url: str) -> list[bytes]:
    try:
        data = json.loads(body)
        items = data[name]
        if not isinstance(items, list) or len(items) > merkle.MAX_PROOF_NODES:
            raise ValueError
        out = [base64.b64decode(item, validate=True) for item in items]
    except (ValueError, TypeError, KeyError, RecursionError, binascii.Error):
        raise LogError(f"{url}: {name} is not a list of base64 hashes") from None
    if any(len(h) != 32 for h in out):
        raise LogError(f"{url}: {name} holds a hash that is not 32 bytes")
    return out


def _check_range(cr: merkle.CompactRange, head: TreeHead, url: str) -> merkle.CompactRange:
    if cr.root() != head.root:
        raise LogError(f"{url}: the tree's hashes do not match the signed root of size {head.size}")
    return cr


class Rfc6962Source:
    """An RFC 6962 log (``<url>ct/v1/…``)."""

    def __init__(self, info: LogInfo, http: HttpClient, executor: Executor) -> None:
        self.info = info
        self.http = http
        self.executor = executor
        self.batch = BATCH_SIZE

    def _url(self, path: str) -> str:
        return f"{self.info.url}ct/v1/{path}"

    def head(self) -> TreeHead:
        url = self._url("get-sth")
        head, signature = parse_sth(_get(self.http, url, 64 * 1024, "get-sth"), url)
        verify_tree_head(self.info.key, head, signature, url)
        return head

    def consistency(self, first: int, second: int, head: TreeHead) -> list[bytes]:
        url = self._url(f"get-sth-consistency?first={first}&second={second}")
        body = _get(self.http, url, _MAX_PROOF_RESPONSE, "get-sth-consistency")
        return _b64_list(body, "consistency", url)

    def compact_range(self, head: TreeHead) -> merkle.CompactRange:
        if head.size == 0:
            return merkle.CompactRange()
        last = head.size - 1
        (entry,) = self._fetch(last, last + 1)
        url = self._url(
            "get-proof-by-hash?hash="
            + quote(base64.b64encode(entry.leaf_hash).decode(), safe="")
            + f"&tree_size={head.size}"
        )
        body = _get(self.http, url, _MAX_PROOF_RESPONSE, "get-proof-by-hash")
        path = _b64_list(body, "audit_path", url)
        try:
            index = json.loads(body)["leaf_index"]
        except (ValueError, KeyError, TypeError):  # Defensive: _b64_list parsed it already
            index = None
        if index != last or not merkle.verify_inclusion(
            last, head.size, entry.leaf_hash, path, head.root
        ):
            raise LogError(f"{url}: the inclusion proof of the last entry does not verify")
        try:
            cr = merkle.CompactRange.from_last_leaf(head.size, entry.leaf_hash, path)
        except ValueError:  # Defensive: a path that verified has the right length
            raise LogError(f"{url}: the inclusion proof has the wrong length") from None
        return _check_range(cr, head, self.info.url)

    def _fetch(self, start: int, end: int) -> list[Entry]:
        """Entries [start, end): one request, then more for whatever the log left out."""
        out: list[Entry] = []
        while start < end:
            url = self._url(f"get-entries?start={start}&end={end - 1}")
            body = _get(self.http, url, MAX_ENTRIES_RESPONSE, "get-entries")
            got = parse_get_entries(body, start, end - start, url)
            out += got
            start += len(got)
        return out

    def entries(self, start: int, end: int, head: TreeHead) -> Iterator[list[Entry]]:
        ranges = [(a, min(a + self.batch, end)) for a in range(start, end, self.batch)]
        yield from self.executor.map(lambda r: self._fetch(*r), ranges)

    def chain(self, entry: Entry) -> tuple[bytes, list[bytes]]:
        return entry.chain()


def tile_path(level: int | str, index: int, width: int = _TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` with N in 3-digit groups, all but the last prefixed ``x``
    (C2SP tlog-tiles): tile 1234067 of level 0 is ``tile/0/x001/x234/067``."""
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    path = f"tile/{level}/" + "/".join(reversed(groups))
    return path if width == _TILE_WIDTH else f"{path}.p/{width}"


class TiledSource:
    """A static-ct-api log (``<monitoring_url>checkpoint``, ``tile/…``, ``issuer/…``)."""

    def __init__(self, info: LogInfo, http: HttpClient, executor: Executor) -> None:
        self.info = info
        self.http = http
        self.executor = executor
        self._tiles: dict[tuple[int, int, int], list[bytes]] = {}
        self._issuers: dict[bytes, bytes] = {}

    def head(self) -> TreeHead:
        url = f"{self.info.url}checkpoint"
        body = _get(self.http, url, 128 * 1024, "checkpoint")
        return parse_checkpoint(body, self.info.origin, self.info.key, url)

    # -- hash tiles ---------------------------------------------------------------------------

    @staticmethod
    def _width(level: int, n: int, size: int) -> int:
        """How many hashes tile `n` of `level` holds in a tree of `size` leaves (0: none)."""
        return max(0, min(_TILE_WIDTH, (size >> (8 * level)) - n * _TILE_WIDTH))

    def _tile(self, level: int, n: int, width: int) -> list[bytes]:
        key = (level, n, width)
        cached = self._tiles.get(key)
        if cached is not None:
            return cached
        url = self.info.url + tile_path(level, n, width)
        status, body = self.http.get(url, 32 * _TILE_WIDTH)
        if status == 404 and width < _TILE_WIDTH:
            # tlog-tiles: once the full tile exists a log may drop the partial one; the first
            # `width` hashes of the full tile are the same subtrees.
            url = self.info.url + tile_path(level, n)
            status, body = self.http.get(url, 32 * _TILE_WIDTH)
            body = body[: 32 * width] if status == 200 and len(body) == 32 * _TILE_WIDTH else b""
        if status != 200:
            raise LogError(f"{url}: hash tile: HTTP {status}")
        if len(body) != 32 * width:
            raise LogError(f"{url}: a hash tile of {len(body)} bytes, expected {32 * width}")
        hashes = [body[i : i + 32] for i in range(0, len(body), 32)]
        if len(self._tiles) > 4096:  # bounded: a run needs a few tiles per level
            self._tiles.clear()
        self._tiles[key] = hashes
        return hashes

    def _node_source(self, size: int) -> merkle.NodeSource:
        """Perfect-subtree hashes of the tree of `size` leaves, read from its tiles."""

        def node(height: int, index: int) -> bytes:
            level, sub = divmod(height, 8)
            first = index << sub  # the first level-8*level hash under this node
            n = first // _TILE_WIDTH
            hashes = self._tile(level, n, self._width(level, n, size))
            offset = first - n * _TILE_WIDTH
            row = hashes[offset : offset + (1 << sub)]
            if len(row) != 1 << sub:
                raise LogError(f"{self.info.url}: a hash tile is too short for the tree")
            while len(row) > 1:
                row = [merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
            return row[0]

        return node

    def consistency(self, first: int, second: int, head: TreeHead) -> list[bytes]:
        return merkle.consistency_proof(self._node_source(second), first, second)

    def compact_range(self, head: TreeHead) -> merkle.CompactRange:
        node = self._node_source(head.size)
        hashes, start = [], 0
        for bit in reversed(range(head.size.bit_length())):
            if head.size >> bit & 1:
                hashes.append(node(bit, start >> bit))
                start += 1 << bit
        return _check_range(merkle.CompactRange(head.size, hashes), head, self.info.url)

    # -- data tiles ---------------------------------------------------------------------------

    def _data_tile(self, n: int, size: int) -> list[Entry]:
        width = self._width(0, n, size)
        url = self.info.url + tile_path("data", n, width)
        status, body = self.http.get(url, MAX_DATA_TILE)
        if status == 404 and width < _TILE_WIDTH:
            url = self.info.url + tile_path("data", n)
            status, body = self.http.get(url, MAX_DATA_TILE)
            if status == 200:
                return parse_data_tile(body, n * _TILE_WIDTH, _TILE_WIDTH, url)[:width]
        if status != 200:
            raise LogError(f"{url}: data tile: HTTP {status}")
        return parse_data_tile(body, n * _TILE_WIDTH, width, url)

    def entries(self, start: int, end: int, head: TreeHead) -> Iterator[list[Entry]]:
        if start >= end:
            return
        tiles = range(start // _TILE_WIDTH, (end - 1) // _TILE_WIDTH + 1)
        for batch in self.executor.map(lambda n: self._data_tile(n, head.size), tiles):
            yield [e for e in batch if start <= e.index < end]

    def chain(self, entry: Entry) -> tuple[bytes, list[bytes]]:
        leaf = entry.precert if entry.precert is not None else entry.tbs_or_cert
        return leaf, [self._issuer(fp) for fp in entry.issuers]

    def _issuer(self, fingerprint: bytes) -> bytes:
        cert = self._issuers.get(fingerprint)
        if cert is None:
            url = f"{self.info.url}issuer/{fingerprint.hex()}"
            cert = _get(self.http, url, MAX_ISSUER, "issuer")
            if hashlib.sha256(cert).digest() != fingerprint:
                raise LogError(f"{url}: the issuer certificate does not hash to its fingerprint")
            self._issuers[fingerprint] = cert
        return cert
