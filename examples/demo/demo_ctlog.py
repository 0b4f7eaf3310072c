"""A loopback CT log for the demo and the tests: entries, the Merkle tree, signatures, and
switches to misbehave.

The demo's CT step (``examples/demo/demo.py``) and the CT tests (``tests/ct/``, on pytest's
``pythonpath``) share this one implementation; nothing here is certpin's public API.

One `TestLog` backs either server (`demo_ctservers.RFC6962Server`,
`demo_ctservers.TiledServer`); it holds
every entry in both encodings (RFC 6962 ``get-entries`` JSON and static-ct-api TileLeaf) and
signs tree heads as either API does. Misbehaviour switches:

- `signing_key`: sign tree heads with another key than the one in the log list;
- `fork(index)`: rewrite history from `index` on (a different tree, validly signed);
- `tampered`: entries served with a changed leaf (what the tree holds stays the same);
- `tampered_tiles` / `tampered_hash_tiles`: data or hash tiles served with a flipped byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certpin.lifecycle.ct import merkle

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "p256": ec.SECP256R1,
    "p384": ec.SECP384R1,
    "p521": ec.SECP521R1,
}


def make_key(kind: str = "p256") -> PrivateKey:
    """A fresh log key: ``p256``/``p384``/``p521``, ``rsa2048``/``rsa3072`` or ``ed25519``."""
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind]())
    if kind in ("rsa2048", "rsa3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}")


def spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def digitally_signed(key: PrivateKey, data: bytes) -> bytes:
    """RFC 5246 digitally-signed with SHA-256: ECDSA (3) or RSA PKCS#1 v1.5 (1)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg, sig = 3, key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding

        alg, sig = 1, key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise TypeError(f"{type(key).__name__} cannot sign an RFC 6962 structure")
    return bytes((4, alg)) + len(sig).to_bytes(2, "big") + sig


def vec(data: bytes, size: int) -> bytes:
    return len(data).to_bytes(size, "big") + data


@dataclass
class Logged:
    """One entry as the log stores it."""

    entry_type: int  # 0 x509, 1 precert
    timestamp: int
    signed_entry: bytes  # x509: vec3(cert); precert: issuer_key_hash || vec3(tbs)
    cert: bytes  # the certificate or the precertificate
    chain: list[bytes]
    extensions: bytes = b""

    def timestamped_entry(self) -> bytes:
        return (
            struct.pack(">QH", self.timestamp, self.entry_type)
            + self.signed_entry
            + vec(self.extensions, 2)
        )

    def leaf(self) -> bytes:
        return b"\x00\x00" + self.timestamped_entry()

    def extra_data(self) -> bytes:
        chain = b"".join(vec(c, 3) for c in self.chain)
        if self.entry_type == 0:
            return vec(chain, 3)
        return vec(self.cert, 3) + vec(chain, 3)

    def tile_leaf(self) -> bytes:
        out = self.timestamped_entry()
        if self.entry_type == 1:
            out += vec(self.cert, 3)
        fingerprints = b"".join(hashlib.sha256(c).digest() for c in self.chain)
        return out + vec(fingerprints, 2)


def _tbs_and_issuer_key_hash(precert: bytes, issuer: bytes) -> bytes:
    """PreCert: SHA-256 of the issuer's SPKI (as its certificate encodes it: RFC 6962 §3.2) and
    the precertificate's TBS minus the poison."""
    from certpin.core.pins import spki_of_certificate
    from certpin.lifecycle.ct.certs import issuance_tbs, tbs_of_certificate

    issuer_spki = spki_of_certificate(issuer)
    tbs = issuance_tbs(tbs_of_certificate(precert))
    return hashlib.sha256(issuer_spki).digest() + vec(tbs, 3)


@dataclass
class TestLog:
    """A CT log in memory. `static` logs put the static-ct-api leaf_index extension in entries."""

    key_type: str = "p256"
    static: bool = False
    origin: str = "ct.example/test-log"
    key: PrivateKey = field(init=False)
    signing_key: PrivateKey | None = None
    entries: list[Logged] = field(default_factory=list)
    roots: list[bytes] = field(default_factory=list)
    tampered: dict[int, Logged] = field(default_factory=dict)
    tampered_tiles: set[int] = field(default_factory=set)
    tampered_hash_tiles: set[tuple[int, int]] = field(default_factory=set)
    #: the size get-sth / checkpoint publish (None: every entry)
    published: int | None = None
    _levels: list[list[bytes]] = field(default_factory=lambda: [[]])
    _json: list[bytes] = field(default_factory=list)
    _issuers: dict[str, bytes] = field(default_factory=dict)
    _clock: int = 0

    __test__ = False  # not a pytest class

    def __post_init__(self) -> None:
        self.key = make_key(self.key_type)

    # -- identity -----------------------------------------------------------------------------

    @property
    def spki(self) -> bytes:
        return spki(self.key)

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(self.spki).digest()

    # -- adding ---------------------------------------------------------------------------------

    def _timestamp(self) -> int:
        # Strictly increasing, so two submissions of one certificate are two leaves.
        self._clock = max(self._clock + 1, int(time.time() * 1000))
        return self._clock

    def add_x509(self, cert: bytes, chain: list[bytes]) -> int:
        signed = vec(cert, 3)
        return self._append(Logged(0, self._timestamp(), signed, cert, list(chain)))

    def add_precert(self, precert: bytes, chain: list[bytes]) -> int:
        signed = _tbs_and_issuer_key_hash(precert, chain[0])
        return self._append(Logged(1, self._timestamp(), signed, precert, list(chain)))

    def _append(self, logged: Logged) -> int:
        index = len(self.entries)
        if self.static:
            logged.extensions = b"\x00" + vec(index.to_bytes(5, "big"), 2)
        self.entries.append(logged)
        for cert in logged.chain:
            self._issuers.setdefault(hashlib.sha256(cert).hexdigest(), cert)
        self._json.append(self._encode(logged))
        self._add_hash(merkle.leaf_hash(logged.leaf()))
        return index

    def _encode(self, logged: Logged) -> bytes:
        return json.dumps(
            {
                "leaf_input": base64.b64encode(logged.leaf()).decode(),
                "extra_data": base64.b64encode(logged.extra_data()).decode(),
            }
        ).encode()

    def _add_hash(self, h: bytes) -> None:
        levels = self._levels
        levels[0].append(h)
        level = 0
        while len(levels[level]) % 2 == 0:
            row = levels[level]
            if level + 1 == len(levels):
                levels.append([])
            levels[level + 1].append(merkle.node_hash(row[-2], row[-1]))
            level += 1

    def sct(self, index: int) -> bytes:
        """The serialized SCT (RFC 6962 §3.2) the log returned for entry `index`."""
        logged = self.entries[index]
        data = (
            struct.pack(">BBQH", 0, 0, logged.timestamp, logged.entry_type)
            + logged.signed_entry
            + vec(logged.extensions, 2)
        )
        signature = digitally_signed(self.key, data)
        return (
            b"\x00"
            + self.log_id
            + struct.pack(">Q", logged.timestamp)
            + vec(logged.extensions, 2)
            + signature
        )

    # -- misbehaving ----------------------------------------------------------------------------

    def fork(self, index: int) -> None:
        """Rewrite entry `index` and everything after it: a different tree of the same size."""
        kept, rest = self.entries[:index], self.entries[index:]
        self.entries, self._levels, self._json = [], [[]], []
        for logged in kept:
            self._append(logged)
        for logged in rest:
            self._append(
                Logged(
                    logged.entry_type,
                    logged.timestamp + 1,
                    logged.signed_entry,
                    logged.cert,
                    logged.chain,
                )
            )

    def swap_precert(self, index: int, precert: bytes) -> None:
        """Serve entry `index` with another precertificate beside it (in extra_data or the
        data tile); its leaf, and so the tree, stay the same."""
        real = self.entries[index]
        self.tampered[index] = Logged(
            real.entry_type, real.timestamp, real.signed_entry, precert, real.chain, real.extensions
        )

    def tamper(self, index: int) -> None:
        """Serve entry `index` with another timestamp; the tree keeps the real one."""
        real = self.entries[index]
        self.tampered[index] = Logged(
            real.entry_type,
            real.timestamp + 1,
            real.signed_entry,
            real.cert,
            real.chain,
            real.extensions,
        )

    # -- reading --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.entries) if self.published is None else self.published

    def node(self, level: int, index: int) -> bytes:
        return self._levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return merkle.range_hash(self.node, 0, self.size if size is None else size)

    def consistency(self, first: int, second: int) -> list[bytes]:
        return merkle.consistency_proof(self.node, first, second)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_path(self.node, index, size)

    def sct_json(self, index: int) -> dict[str, object]:
        """The add-chain / add-pre-chain answer (RFC 6962 §4.1)."""
        logged = self.entries[index]
        data = (
            struct.pack(">BBQH", 0, 0, logged.timestamp, logged.entry_type)
            + logged.signed_entry
            + vec(logged.extensions, 2)
        )
        return {
            "sct_version": 0,
            "id": base64.b64encode(self.log_id).decode(),
            "timestamp": logged.timestamp,
            "extensions": base64.b64encode(logged.extensions).decode(),
            "signature": base64.b64encode(digitally_signed(self.key, data)).decode(),
        }

    def served(self, index: int) -> Logged:
        return self.tampered.get(index, self.entries[index])

    def entries_json(self, start: int, end: int) -> bytes:
        parts = [
            self._encode(self.tampered[i]) if i in self.tampered else self._json[i]
            for i in range(start, end)
        ]
        return b'{"entries":[' + b",".join(parts) + b"]}"

    def _signer(self) -> PrivateKey:
        return self.signing_key or self.key

    def sth(self) -> dict[str, object]:
        size, timestamp = self.size, self._timestamp()
        root = self.root(size)
        data = struct.pack(">BBQQ", 0, 1, timestamp, size) + root
        return {
            "tree_size": size,
            "timestamp": timestamp,
            "sha256_root_hash": base64.b64encode(root).decode(),
            "tree_head_signature": base64.b64encode(
                digitally_signed(self._signer(), data)
            ).decode(),
        }

    def checkpoint(self, witness: bool = False) -> bytes:
        """A signed note: RFC6962NoteSignature, or Ed25519 for an Ed25519 key."""
        size = self.size
        root = self.root(size)
        text = f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n"
        signer = self._signer()
        if isinstance(signer, ed25519.Ed25519PrivateKey):
            raw = self.key.public_key().public_bytes(  # type: ignore[union-attr]
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            key_id = hashlib.sha256(self.origin.encode() + b"\n\x01" + raw).digest()[:4]
            body = signer.sign(text.encode())
        else:
            key_id = hashlib.sha256(self.origin.encode() + b"\n\x05" + self.log_id).digest()[:4]
            timestamp = self._timestamp()
            data = struct.pack(">BBQQ", 0, 1, timestamp, size) + root
            body = struct.pack(">Q", timestamp) + digitally_signed(signer, data)
        lines = [f"\u2014 {self.origin} {base64.b64encode(key_id + body).decode()}"]
        if witness:  # a cosignature by a key nobody configured: must be ignored
            cosignature = b"abcd" + ed25519.Ed25519PrivateKey.generate().sign(text.encode())
            lines.insert(0, f"\u2014 witness.example/w1 {base64.b64encode(cosignature).decode()}")
        return (text + "\n" + "\n".join(lines) + "\n").encode()

    def hash_tile(self, level: int, n: int, width: int) -> bytes:
        tree = []
        height = 8 * level
        for i in range(n * 256, n * 256 + width):
            tree.append(self.node(height, i))
        data = bytearray(b"".join(tree))
        if (level, n) in self.tampered_hash_tiles and data:
            data[0] ^= 1
        return bytes(data)

    def data_tile(self, n: int, width: int) -> bytes:
        data = bytearray(
            b"".join(self.served(i).tile_leaf() for i in range(n * 256, n * 256 + width))
        )
        if n in self.tampered_tiles and data:
            data[7] ^= 1  # the first entry's timestamp: still parses, hashes differently
        return bytes(data)

    def issuer(self, fingerprint: str) -> bytes | None:
        return self._issuers.get(fingerprint)

    def log_list_entry(self, url: str, submission_url: str | None = None) -> dict[str, object]:
        entry: dict[str, object] = {
            "description": f"certpin test log {self.origin}",
            "log_id": base64.b64encode(self.log_id).decode(),
            "key": base64.b64encode(self.spki).decode(),
            "mmd": 60,
            "state": {"usable": {"timestamp": "2024-01-01T00:00:00Z"}},
        }
        if self.static:
            entry["submission_url"] = submission_url or f"https://{self.origin}/"
            entry["monitoring_url"] = url
        else:
            entry["url"] = url
        return entry
