"""RFC 6962 signed tree heads: ``get-sth`` (§4.3) and the TLS ``digitally-signed`` struct.

A tree head is only ever used after its signature verified against the key the log list gives
for the log: `parse_sth` returns a `TreeHead` and the signature bytes, `verify_tree_head` checks
them. The same TreeHeadSignature is inside a static-ct-api checkpoint (`checkpoint.py`).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from certpin.lifecycle.ct._wire import Reader
from certpin.lifecycle.ct.errors import EntryError, LogError

__all__ = [
    "MAX_STH_SIZE",
    "LogKey",
    "PublicKey",
    "TreeHead",
    "parse_sth",
    "tree_head_signature_input",
    "verify_digitally_signed",
    "verify_tree_head",
]

#: the largest get-sth response read (a real one is about 300 bytes).
MAX_STH_SIZE = 64 * 1024
_UINT64 = 2**64

# RFC 5246 §7.4.1.4.1: HashAlgorithm sha256(4); SignatureAlgorithm rsa(1), ecdsa(3).
_SHA256, _RSA, _ECDSA = 4, 1, 3

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class LogKey:
    """A log's public key as the log list gives it.

    Attributes:
        spki: the SubjectPublicKeyInfo DER (the log list's ``key``).
        log_id: SHA-256 of `spki` (RFC 6962 §3.2).
        key: the loaded key: ECDSA P-256 or RSA (RFC 6962 §2.1.4), or Ed25519 (checkpoints).
    """

    spki: bytes
    log_id: bytes
    key: PublicKey


@dataclass(frozen=True)
class TreeHead:
    """A verified tree head: `size` leaves hashing to `root`, signed at `timestamp` (ms since the
    epoch; None for a checkpoint signed without one, e.g. Ed25519)."""

    size: int
    root: bytes
    timestamp: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "timestamp": self.timestamp,
        }


def tree_head_signature_input(timestamp: int, size: int, root: bytes) -> bytes:
    """RFC 6962 §3.5 TreeHeadSignature: version v1(0), signature_type tree_hash(1), timestamp,
    tree_size, sha256_root_hash."""
    return struct.pack(">BBQQ", 0, 1, timestamp, size) + root


def verify_digitally_signed(key: LogKey, data: bytes, signed: bytes, what: str) -> None:
    """Check an RFC 5246 ``digitally-signed`` struct over `data` (SHA-256 with the log's key).

    Raises:
        LogError: the struct is malformed, names another algorithm than the key's, or the
            signature does not verify.
    """
    try:
        reader = Reader(signed, what)
        hash_alg, sig_alg = reader.uint(1), reader.uint(1)
        signature = reader.vector(2)
        reader.done()
    except EntryError as exc:
        raise LogError(f"{exc}") from None
    if hash_alg != _SHA256:
        raise LogError(f"{what}: hash algorithm {hash_alg} is not SHA-256 (4)")
    pub = key.key
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey) and sig_alg == _ECDSA:
            pub.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey) and sig_alg == _RSA:
            pub.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise LogError(
                f"{what}: signature algorithm {sig_alg} does not match the log's "
                f"{type(pub).__name__.removesuffix('PublicKey')} key"
            )
    except InvalidSignature:
        raise LogError(f"{what}: the signature does not verify with the log's key") from None


def _uint64(data: dict[str, Any], name: str, url: str) -> int:
    value = data.get(name)
    if type(value) is not int or not 0 <= value < _UINT64:
        raise LogError(f"{url}: get-sth: {name} is not a 64-bit unsigned integer")
    return value


def _b64(data: dict[str, Any], name: str, url: str) -> bytes:
    value = data.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise LogError(f"{url}: get-sth: {name} is not base64") from None


def parse_sth(body: bytes, url: str) -> tuple[TreeHead, bytes]:
    """A get-sth response: the (unverified) tree head and its ``tree_head_signature`` bytes."""
    if len(body) > MAX_STH_SIZE:
        raise LogError(f"{url}: get-sth: the response is larger than {MAX_STH_SIZE} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise LogError(f"{url}: get-sth: the response is not JSON") from None
    if not isinstance(data, dict):
        raise LogError(f"{url}: get-sth: the response is not a JSON object")
    size = _uint64(data, "tree_size", url)
    timestamp = _uint64(data, "timestamp", url)
    root = _b64(data, "sha256_root_hash", url)
    if len(root) != 32:
        raise LogError(f"{url}: get-sth: sha256_root_hash is not 32 bytes")
    return TreeHead(size, root, timestamp), _b64(data, "tree_head_signature", url)


def verify_tree_head(key: LogKey, head: TreeHead, signature: bytes, url: str) -> None:
    """Raise `LogError` unless `signature` is the log's signature over `head` (RFC 6962 §3.5)."""
    if head.timestamp is None:  # Defensive: parse_sth always sets it
        raise LogError(f"{url}: get-sth: no timestamp")
    data = tree_head_signature_input(head.timestamp, head.size, head.root)
    verify_digitally_signed(key, data, signature, f"{url}: get-sth: tree_head_signature")
