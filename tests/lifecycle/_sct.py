"""Certificates with embedded SCTs, as a CA makes them: the precertificate goes to a loopback
RFC 6962 log over HTTP (``add-pre-chain``), the log's answer becomes a TLS-encoded SCT, and the
final certificate carries the SCT list (RFC 6962 §3.3). The certificate builder and the SCT list
extension are the CT tests' (`ct._certs`); the log is the demo's (`demo_ctlog`)."""

from __future__ import annotations

import base64
import json
import struct
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server

from _support.pki import CA, spki_pin
from _support.servers import TLSServer
from certpin.core.der import read_tlv
from certpin.lifecycle.ct.certs import _der  # the DER TLV encoder CT's issuance_tbs uses
from ct._certs import Issuance

__all__ = [
    "Served",
    "add_pre_chain",
    "compressed_point_ca",
    "flip_signature",
    "new_log",
    "sct_from_answer",
    "serve",
    "signed_sct",
    "write_log_list",
]


def add_pre_chain(server: RFC6962Server, issuance: Issuance) -> dict[str, Any]:
    """POST the precertificate and its issuer chain to ``ct/v1/add-pre-chain``; the log's JSON
    answer (RFC 6962 §4.1: sct_version, id, timestamp, extensions, signature)."""
    chain = [issuance.precert(), *issuance.chain()]
    body = json.dumps({"chain": [base64.b64encode(c).decode() for c in chain]}).encode()
    request = urllib.request.Request(
        server.url + "ct/v1/add-pre-chain",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def sct_from_answer(answer: dict[str, Any]) -> bytes:
    """The SignedCertificateTimestamp (RFC 6962 §3.2) of an add-(pre-)chain answer:
    ``version(1) || LogID(32) || timestamp(8) || extensions<0..2^16-1> || digitally-signed``
    (the answer's ``signature`` already is the encoded digitally-signed struct)."""
    log_id = base64.b64decode(answer["id"])
    extensions = base64.b64decode(answer["extensions"])
    assert len(log_id) == 32
    return (
        bytes((answer["sct_version"],))
        + log_id
        + struct.pack(">Q", answer["timestamp"])
        + len(extensions).to_bytes(2, "big")
        + extensions
        + base64.b64decode(answer["signature"])
    )


def flip_signature(sct: bytes) -> bytes:
    """`sct` with the last byte of its signature flipped (still a well-formed SCT)."""
    return sct[:-1] + bytes((sct[-1] ^ 0x01,))


def write_log_list(path: Path, *servers: RFC6962Server) -> Path:
    """A v3 log list naming `servers`, one operator each."""
    operators = [
        {"name": f"operator {i}", "email": [], "logs": [s.log.log_list_entry(s.url)]}
        for i, s in enumerate(servers)
    ]
    path.write_text(json.dumps({"version": "3.0", "operators": operators}))
    return path


@dataclass
class Served:
    """A loopback TLS server for ``localhost`` and the files a client needs."""

    port: int
    cafile: Path
    policy: Path


@contextmanager
def serve(tmp_path: Path, issuance: Issuance, leaf_der: bytes) -> Iterator[Served]:
    """Serve `leaf_der` (issued by `issuance`) with its intermediates; the root in `cafile`; a
    policy pinning the leaf's key (and a backup) for ``localhost``."""

    leaf = x509.load_der_x509_certificate(leaf_der)
    ca: CA = issuance.ca
    chain = [leaf.public_bytes(serialization.Encoding.PEM)]
    chain += [c.pem() for c in ca.chain_to_root() if not c.is_root]
    certfile = tmp_path / "chain.pem"
    certfile.write_bytes(b"".join(chain))
    keyfile = tmp_path / "key.pem"
    keyfile.write_bytes(
        issuance.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cafile = ca.root.write(tmp_path / "root.pem")
    policy = tmp_path / "pins.json"
    pins = [spki_pin(issuance.key.public_key()), spki_pin(ca.root.key.public_key())]
    policy.write_text(json.dumps({"domains": {"localhost": {"pins": pins}}}))
    with TLSServer(certfile, keyfile) as server:
        yield Served(server.port, cafile, policy)


def new_log(key_type: str = "p256") -> RFC6962Server:
    """A loopback RFC 6962 log (not started: use it as a context manager)."""
    return RFC6962Server(TestLog(key_type=key_type))


def _content(der: bytes) -> bytes:
    """The content octets of one DER TLV."""
    _, start, end = read_tlv(der, 0)
    return der[start:end]


def compressed_point_ca(parent: CA, name: str) -> CA:
    """An intermediate CA (P-256) whose certificate carries its key as a *compressed* point
    (SEC 1 §2.3.3; legal in a SubjectPublicKeyInfo, RFC 5480 §2.2): re-encoding the loaded key
    gives other SPKI bytes than the certificate's, so a hash over them differs."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    normal = parent.issue_intermediate(name, key="p256")
    key = normal.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert_der = normal.cert.public_bytes(serialization.Encoding.DER)
    tbs = normal.cert.tbs_certificate_bytes
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    algorithm = _content(spki)[: len(_content(spki)) - 2 - 1 - 65]  # AlgorithmIdentifier TLV
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    compressed = _der(0x30, algorithm + _der(0x03, b"\x00" + point))
    assert tbs.count(spki) == 1
    new_tbs = _der(0x30, _content(tbs).replace(spki, compressed))
    signature_algorithm = _content(cert_der)[len(tbs) :]
    signature_algorithm = signature_algorithm[: 2 + signature_algorithm[1]]
    parent_key = parent.key
    assert isinstance(parent_key, ec.EllipticCurvePrivateKey)
    signature = parent_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    cert = _der(0x30, new_tbs + signature_algorithm + _der(0x03, b"\x00" + signature))
    return CA(x509.load_der_x509_certificate(cert), key, parent)


def signed_sct(log: TestLog, issuance: Issuance, issuer_spki: bytes, timestamp: int) -> bytes:
    """An SCT for `issuance`'s precertificate signed with `log`'s key over the RFC 6962 §3.2
    data built here from `issuer_spki` (the bytes hashed into issuer_key_hash) and the final
    certificate's TBS as cryptography writes it before any SCT list is added."""
    import hashlib

    from demo_ctlog import digitally_signed

    tbs = x509.load_der_x509_certificate(issuance.final()).tbs_certificate_bytes
    data = (
        struct.pack(">BBQH", 0, 0, timestamp, 1)
        + hashlib.sha256(issuer_spki).digest()
        + len(tbs).to_bytes(3, "big")
        + tbs
        + b"\x00\x00"
    )
    signature = digitally_signed(log.key, data)
    return b"\x00" + log.log_id + struct.pack(">Q", timestamp) + b"\x00\x00" + signature
