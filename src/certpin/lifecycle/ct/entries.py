"""Log entries: RFC 6962 §3.4 MerkleTreeLeaf / TimestampedEntry, ``get-entries`` (§4.6) and
static-ct-api data tiles.

An `Entry` keeps what the watcher needs for every entry (the leaf hash, which goes into the
Merkle tree, and the certificate or precertificate TBS, whose names decide whether it matters)
and leaves the rest (the issuer chain) unparsed until a policy rule covers the names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from certpin.lifecycle.ct._wire import Reader
from certpin.lifecycle.ct.errors import EntryError

__all__ = [
    "PRECERT_ENTRY",
    "X509_ENTRY",
    "Entry",
    "parse_data_tile",
    "parse_get_entries",
    "parse_leaf",
]

X509_ENTRY, PRECERT_ENTRY = 0, 1
ENTRY_TYPES = {X509_ENTRY: "x509", PRECERT_ENTRY: "precert"}
_MAX_CHAIN = 32  # certificates in one stored chain: real ones have 1 to 4
_sha256 = hashlib.sha256


@dataclass(slots=True)
class Entry:
    """One log entry.

    Attributes:
        index: its position in the log.
        leaf_hash: MTH of its MerkleTreeLeaf (what the tree commits to).
        entry_type: `X509_ENTRY` or `PRECERT_ENTRY`.
        timestamp: the TimestampedEntry's timestamp (ms since the epoch).
        tbs_or_cert: the certificate (x509) or the precertificate's TBSCertificate (precert),
            exactly as in the leaf.
        extra: RFC 6962 ``extra_data`` (the stored chain), parsed by `chain`; or None.
        precert: a tiled log's ``pre_certificate`` (precert entries), else None.
        issuers: a tiled log's issuer fingerprints (SHA-256), else ().
    """

    index: int
    leaf_hash: bytes
    entry_type: int
    timestamp: int
    tbs_or_cert: bytes
    extra: bytes | None = None
    precert: bytes | None = None
    issuers: tuple[bytes, ...] = ()

    @property
    def type_name(self) -> str:
        return ENTRY_TYPES[self.entry_type]

    def chain(self) -> tuple[bytes, list[bytes]]:
        """(the logged certificate, the issuer chain) of an RFC 6962 entry's ``extra_data``.

        For a precert entry the certificate is the precertificate (poison and all): it carries
        the key the final certificate will have.
        """
        where = f"entry {self.index}: extra_data"
        if self.extra is None:
            raise EntryError(f"{where}: missing")
        reader = Reader(self.extra, where)
        if self.entry_type == X509_ENTRY:
            leaf = self.tbs_or_cert
        else:
            leaf = reader.vector(3, 1)  # PrecertChainEntry.pre_certificate
        start, end = reader.vector_span(3)
        reader.done()
        chain = Reader(self.extra, where, start, end)
        issuers = []
        while chain.left():
            issuers.append(chain.vector(3, 1))
            if len(issuers) > _MAX_CHAIN:
                raise EntryError(f"{where}: more than {_MAX_CHAIN} certificates")
        return leaf, issuers


def _timestamped_entry(reader: Reader) -> tuple[int, int, bytes, int, int]:
    """(timestamp, entry type, certificate or TBS, extensions start, end) of a TimestampedEntry."""
    timestamp = reader.uint(8)
    entry_type = reader.uint(2)
    if entry_type == X509_ENTRY:
        body = reader.vector(3, 1)
    elif entry_type == PRECERT_ENTRY:
        reader.fixed(32)  # issuer_key_hash: the verdict uses the stored chain instead
        body = reader.vector(3, 1)
    else:
        raise reader.fail(f"unknown entry type {entry_type}")
    start, end = reader.vector_span(2)
    return timestamp, entry_type, body, start, end


def parse_leaf(index: int, leaf: bytes, extra: bytes | None) -> Entry:
    """An entry from its MerkleTreeLeaf bytes (``leaf_input``) and ``extra_data``."""
    reader = Reader(leaf, f"entry {index}: leaf_input")
    if reader.uint(1) != 0 or reader.uint(1) != 0:
        raise reader.fail("not a v1 timestamped_entry MerkleTreeLeaf")
    timestamp, entry_type, body, _, _ = _timestamped_entry(reader)
    reader.done()
    return Entry(index, _sha256(b"\x00" + leaf).digest(), entry_type, timestamp, body, extra)


def parse_get_entries(body: bytes, start: int, wanted: int, url: str) -> list[Entry]:
    """The entries of a get-entries response for indices from `start`, at most `wanted`.

    A log may return fewer entries than asked (RFC 6962 §4.6), never more, and never none.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise EntryError(f"{url}: get-entries: the response is not JSON") from None
    items = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise EntryError(f"{url}: get-entries: no entries list")
    if len(items) > wanted:
        raise EntryError(f"{url}: get-entries: {len(items)} entries, {wanted} asked for")
    entries = []
    b64decode = base64.b64decode
    for offset, item in enumerate(items):
        index = start + offset
        try:
            leaf = b64decode(item["leaf_input"], validate=True)
            extra = b64decode(item["extra_data"], validate=True)
        except (TypeError, KeyError, ValueError, binascii.Error):
            raise EntryError(
                f"{url}: get-entries: entry {index}: leaf_input and extra_data must be base64"
            ) from None
        entries.append(parse_leaf(index, leaf, extra))
    return entries


def parse_data_tile(data: bytes, first: int, width: int, url: str) -> list[Entry]:
    """The `width` entries of a static-ct-api data tile whose first entry is `first`.

    Each TileLeaf is a TimestampedEntry (its MerkleTreeLeaf is ``0x00 0x00 ||`` it), the
    pre_certificate for precert entries, and the issuers' SHA-256 fingerprints.
    """
    reader = Reader(data, url)
    entries = []
    for offset in range(width):
        index = first + offset
        reader.what = f"{url}: entry {index}"
        begin = reader.pos
        timestamp, entry_type, body, ext_start, ext_end = _timestamped_entry(reader)
        leaf = data[begin : reader.pos]
        _check_leaf_index(data, ext_start, ext_end, index, reader.what)
        precert = reader.vector(3, 1) if entry_type == PRECERT_ENTRY else None
        fingerprints = reader.vector(2)
        if len(fingerprints) % 32 or len(fingerprints) > 32 * _MAX_CHAIN:
            raise reader.fail("certificate_chain is not a list of SHA-256 fingerprints")
        issuers = tuple(fingerprints[i : i + 32] for i in range(0, len(fingerprints), 32))
        digest = _sha256(b"\x00\x00\x00" + leaf).digest()
        entries.append(Entry(index, digest, entry_type, timestamp, body, None, precert, issuers))
    reader.what = url
    reader.done()
    return entries


def _check_leaf_index(data: bytes, start: int, end: int, index: int, what: str) -> None:
    """static-ct-api: a ``leaf_index`` extension (type 0, uint40) must name this very entry."""
    reader = Reader(data, f"{what}: extensions", start, end)
    while reader.left():
        kind = reader.uint(1)
        value = reader.vector(2)
        if kind == 0 and (len(value) != 5 or int.from_bytes(value, "big") != index):
            raise reader.fail(f"leaf_index extension does not say {index}")
