"""C2SP checkpoints (tlog-checkpoint) in signed notes (signed-note), as static-ct-api logs serve.

A checkpoint is verified against the log's key from the log list, never against a key it names:

- an ECDSA or RSA key (what CT logs use) signs with the static-ct-api ``RFC6962NoteSignature``
  type (0x05): the note signature is a timestamp and the RFC 6962 TreeHeadSignature over
  (timestamp, size, root), key ID = SHA-256(origin || 0x0A || 0x05 || LogID)[:4];
- an Ed25519 key signs the note text itself (type 0x01), key ID = SHA-256(origin || 0x0A || 0x01
  || the 32-byte key)[:4].

Signatures by other keys (witnesses) are ignored, as signed-note requires; a signature line with
the log's name and key ID that does not verify rejects the checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certpin.lifecycle.ct._wire import Reader
from certpin.lifecycle.ct.errors import EntryError, LogError
from certpin.lifecycle.ct.sth import (
    LogKey,
    TreeHead,
    tree_head_signature_input,
    verify_digitally_signed,
)

__all__ = ["MAX_CHECKPOINT_SIZE", "key_id", "parse_checkpoint"]

#: the largest checkpoint read: signed-note asks to accept at least 16 signatures, and a
#: post-quantum one is up to about 5 kB.
MAX_CHECKPOINT_SIZE = 128 * 1024
_MAX_SIGNATURES = 64
_ED25519, _RFC6962 = 0x01, 0x05
_SIGNATURE_LINE = re.compile(r"\u2014 (?P<name>[^\s+]+) (?P<sig>[A-Za-z0-9+/]+={0,2})\Z")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


def key_id(origin: str, key: LogKey) -> bytes:
    """The 4-byte key ID of the log's note signatures (see the module docstring)."""
    if isinstance(key.key, ed25519.Ed25519PublicKey):
        raw = key.key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        material = bytes([_ED25519]) + raw
    else:
        material = bytes([_RFC6962]) + key.log_id
    return hashlib.sha256(origin.encode() + b"\n" + material).digest()[:4]


def parse_checkpoint(body: bytes, origin: str, key: LogKey, url: str) -> TreeHead:
    """The tree head of a checkpoint whose log signature verifies with `key` under `origin`.

    Raises:
        LogError: too large, not a signed note, another origin, no verifying log signature.
    """
    where = f"{url}: checkpoint"
    if len(body) > MAX_CHECKPOINT_SIZE:
        raise LogError(f"{where}: larger than {MAX_CHECKPOINT_SIZE} bytes")
    try:
        note = body.decode("utf-8")
    except UnicodeDecodeError:
        raise LogError(f"{where}: not UTF-8") from None
    if any(c < " " and c != "\n" for c in note):
        raise LogError(f"{where}: a control character in a signed note")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise LogError(f"{where}: not a signed note (no blank line before the signatures)")
    text, signatures = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(signatures) > _MAX_SIGNATURES:
        raise LogError(f"{where}: more than {_MAX_SIGNATURES} signatures")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise LogError(f"{where}: the note text is not origin, size and root hash lines")
    if lines[0] != origin:
        raise LogError(f"{where}: origin {lines[0][:100]!r}, expected {origin!r}")
    if not _DECIMAL.fullmatch(lines[1]) or int(lines[1]) >= 2**64:
        raise LogError(f"{where}: tree size {lines[1][:40]!r} is not a decimal uint64")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        root = b""
    if len(root) != 32:
        raise LogError(f"{where}: the root hash is not 32 bytes of base64")
    size = int(lines[1])
    wanted = key_id(origin, key)
    timestamp: int | None = None
    verified = False
    for line in signatures:
        match = _SIGNATURE_LINE.fullmatch(line)
        if match is None:
            raise LogError(f"{where}: malformed signature line {line[:100]!r}")
        try:
            raw = base64.b64decode(match["sig"], validate=True)
        except (ValueError, binascii.Error):
            raise LogError(f"{where}: a signature is not base64") from None
        if len(raw) < 5:
            raise LogError(f"{where}: a signature shorter than its key ID")
        if match["name"] != origin or raw[:4] != wanted:
            continue  # signed-note: unknown keys (witnesses, a rotated key) are ignored
        if isinstance(key.key, ed25519.Ed25519PublicKey):
            try:
                key.key.verify(raw[4:], text.encode())
            except InvalidSignature:
                raise LogError(f"{where}: the log's Ed25519 signature does not verify") from None
        else:
            if len(lines) > 3:
                # static-ct-api: the TreeHeadSignature does not cover extension lines.
                raise LogError(f"{where}: extension lines in an RFC 6962-signed checkpoint")
            timestamp = _verify_rfc6962(key, raw[4:], size, root, where)
        verified = True
    if not verified:
        raise LogError(f"{where}: no signature by the log's key ({origin})")
    return TreeHead(size, root, timestamp)


def _verify_rfc6962(key: LogKey, body: bytes, size: int, root: bytes, where: str) -> int:
    try:
        reader = Reader(body, f"{where}: RFC6962NoteSignature")
        timestamp = reader.uint(8)
        signed = body[reader.pos :]
    except EntryError as exc:
        raise LogError(str(exc)) from None
    data = tree_head_signature_input(timestamp, size, root)
    verify_digitally_signed(key, data, signed, f"{where}: RFC6962NoteSignature")
    return timestamp
