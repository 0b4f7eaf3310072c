"""The Signed Certificate Timestamps embedded in a leaf (RFC 6962 §3.3), verified.

An embedded SCT is a log's signature over the *precertificate*: RFC 6962 §3.2 signs
``version, signature_type = certificate_timestamp, timestamp, entry_type = precert_entry,
PreCert { issuer_key_hash, tbs_certificate }, extensions``, where `tbs_certificate` is the leaf's
TBSCertificate without the SCT list extension (cryptography's ``tbs_precertificate_bytes``) and
`issuer_key_hash` the SHA-256 of the issuing CA's SubjectPublicKeyInfo (the next certificate of
the verified chain). The log's key comes from the log list (`certpin.lifecycle.ct.loglist`); the
``digitally-signed`` check is the CT watcher's (`certpin.lifecycle.ct.sth`), so one function
verifies every log signature. Without a log list the SCTs are counted and their log IDs shown,
and none is called verified.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.certificate_transparency import (
    LogEntryType,
    SignedCertificateTimestamp,
)

from certpin.core.der import spki_from_tbs_certificate
from certpin.core.times import iso
from certpin.lifecycle.ct.errors import LogError
from certpin.lifecycle.ct.loglist import LogInfo
from certpin.lifecycle.ct.sth import verify_digitally_signed

__all__ = ["SctInfo", "SctReport", "embedded_scts", "sct_signed_data"]

# RFC 5246 §7.4.1.4.1 HashAlgorithm values.
_HASH_IDS = {"md5": 1, "sha1": 2, "sha224": 3, "sha256": 4, "sha384": 5, "sha512": 6}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class SctInfo:
    """One embedded SCT.

    Attributes:
        log_id: the log's ID (base64 of SHA-256 of its key).
        log: the log list's entry for it, or None (no list given, or not in it).
        timestamp: when the log promised to include the certificate.
        verified: True (the signature verifies with the log's key), False (it does not), None
            (no key to check it with).
        reason: one sentence.
    """

    log_id: str
    log: LogInfo | None
    timestamp: dt.datetime
    verified: bool | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "log": None if self.log is None else self.log.description or self.log.url,
            "log_url": None if self.log is None else self.log.url,
            "operator": None if self.log is None else self.log.operator,
            "timestamp": iso(self.timestamp),
            "verified": self.verified,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SctReport:
    """The embedded SCTs of a leaf, and whether a log list was there to verify them."""

    scts: tuple[SctInfo, ...]
    log_list: bool
    error: str | None = None

    @property
    def verified(self) -> int:
        return sum(1 for s in self.scts if s.verified)

    @property
    def failed(self) -> int:
        """SCTs whose signature does not verify with their log's key."""
        return sum(1 for s in self.scts if s.verified is False)

    @property
    def unknown(self) -> int:
        """SCTs from logs the log list does not hold (no key to check them with)."""
        return sum(1 for s in self.scts if s.verified is None)

    def summary(self) -> str:
        if self.error is not None:
            return self.error
        if not self.scts:
            return "no embedded SCTs"
        text = f"{len(self.scts)} embedded SCT(s)"
        if not self.log_list:
            return text + " (not verified: give --log-list)"
        text += f", {self.verified} verified"
        if self.failed:
            text += f", {self.failed} FAILED"
        if self.unknown:
            text += f", {self.unknown} from logs not in the list"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "count": len(self.scts),
            "verified": self.verified if self.log_list else None,
            "failed": self.failed if self.log_list else None,
            "unknown": self.unknown if self.log_list else None,
            "error": self.error,
            "scts": [s.to_json() for s in self.scts],
        }


def _millis(when: dt.datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def sct_signed_data(
    sct: SignedCertificateTimestamp, tbs_precert: bytes, issuer_spki: bytes
) -> bytes:
    """The bytes an embedded SCT signs (RFC 6962 §3.2, precert_entry)."""
    return (
        struct.pack(">BBQH", 0, 0, _millis(sct.timestamp), 1)
        + hashlib.sha256(issuer_spki).digest()
        + len(tbs_precert).to_bytes(3, "big")
        + tbs_precert
        + struct.pack(">H", len(sct.extension_bytes))
        + sct.extension_bytes
    )


def _digitally_signed(sct: SignedCertificateTimestamp) -> bytes:
    """The SCT's signature as the RFC 5246 struct `verify_digitally_signed` reads."""
    algorithm = sct.signature_hash_algorithm
    hash_id = _HASH_IDS.get(algorithm.name, 0) if isinstance(algorithm, hashes.HashAlgorithm) else 0
    signature = sct.signature
    return (
        struct.pack(">BBH", hash_id, int(sct.signature_algorithm.value), len(signature)) + signature
    )


def embedded_scts(
    leaf_der: bytes, issuer_der: bytes | None, logs: Sequence[LogInfo] | None
) -> SctReport:
    """The SCTs embedded in `leaf_der`, each verified with its log's key when `logs` (the log
    list) names the log and `issuer_der` (the leaf's issuer in the verified chain) is known."""
    leaf = x509.load_der_x509_certificate(leaf_der)
    try:
        ext = leaf.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        )
    except x509.ExtensionNotFound:
        return SctReport((), logs is not None)
    except ValueError as exc:
        return SctReport((), logs is not None, f"the SCT list does not parse: {exc}")
    by_id = {log.key.log_id: log for log in logs or ()}
    issuer_spki = None
    if issuer_der is not None:
        # RFC 6962 §3.2: issuer_key_hash is over the issuer's SubjectPublicKeyInfo as its
        # certificate holds it (certificate-transparency-go hashes RawSubjectPublicKeyInfo).
        # Re-encoding the loaded key changes legal variants (a compressed EC point, RSA
        # parameters without NULL), and cannot load every key type OpenSSL verified.
        issuer = x509.load_der_x509_certificate(issuer_der)
        issuer_spki = spki_from_tbs_certificate(issuer.tbs_certificate_bytes)
    try:
        tbs = leaf.tbs_precertificate_bytes
    except ValueError as exc:  # Defensive: the extension parsed, so removing it works
        return SctReport((), logs is not None, f"cannot rebuild the precertificate: {exc}")
    out = []
    for sct in ext.value:
        log_id = base64.b64encode(sct.log_id).decode()
        log = by_id.get(sct.log_id)
        name = log_id if log is None else (log.description or log.url)
        verified: bool | None
        if logs is None:
            verified, reason = None, f"log {log_id}: not verified (no log list)"
        elif log is None:
            verified, reason = None, f"log {log_id}: not in the log list"
        elif sct.entry_type is not LogEntryType.PRE_CERTIFICATE or issuer_spki is None:
            verified, reason = False, f"{name}: not an embedded precertificate SCT with an issuer"
        else:
            data = sct_signed_data(sct, tbs, issuer_spki)
            try:
                verify_digitally_signed(log.key, data, _digitally_signed(sct), f"SCT of {name}")
            except LogError as exc:
                verified, reason = False, str(exc)
            else:
                verified, reason = True, f"{name}: signature verified"
        out.append(SctInfo(log_id, log, sct.timestamp.replace(tzinfo=dt.UTC), verified, reason))
    return SctReport(tuple(out), logs is not None)
