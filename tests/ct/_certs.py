"""Certificates as CAs log them: final certificates, precertificates (RFC 6962 §3.1 poison) and
final certificates that embed their SCTs, with any names and any (reused) key."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from _support.pki import CA, PrivateKey, make_key

SCT_LIST_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def sct_list_extension(scts: list[bytes]) -> x509.UnrecognizedExtension:
    """RFC 6962 §3.3: a SignedCertificateTimestampList (TLS-encoded) in an OCTET STRING."""
    body = b"".join(len(s).to_bytes(2, "big") + s for s in scts)
    tls = len(body).to_bytes(2, "big") + body
    return x509.UnrecognizedExtension(SCT_LIST_OID, _octet_string(tls))


def _octet_string(data: bytes) -> bytes:
    n = len(data)
    if n < 0x80:
        return bytes((0x04, n)) + data
    size = (n.bit_length() + 7) // 8
    return bytes((0x04, 0x80 | size)) + n.to_bytes(size, "big") + data


@dataclass
class Issuance:
    """One issuance: the precertificate and the final certificate share serial, names and key."""

    ca: CA
    key: PrivateKey
    builder: x509.CertificateBuilder

    def precert(self) -> bytes:
        poisoned = self.builder.add_extension(x509.PrecertPoison(), critical=True)
        return _der(poisoned.sign(self.ca.key, hashes.SHA256()))

    def final(self, scts: list[bytes] | None = None) -> bytes:
        builder = self.builder
        if scts:
            builder = builder.add_extension(sct_list_extension(scts), critical=False)
        return _der(builder.sign(self.ca.key, hashes.SHA256()))

    def chain(self) -> list[bytes]:
        """The issuer chain a CA submits: the issuing CA up to (not including) the root."""
        return [_der(c.cert) for c in self.ca.chain_to_root() if not c.is_root]


def issuance(
    ca: CA,
    *names: str,
    key: PrivateKey | None = None,
    cn: str | None = None,
    san: bool = True,
    not_after: dt.datetime | None = None,
) -> Issuance:
    """A certificate for `names` from `ca` (a fresh P-256 key unless `key` is given)."""
    key = key or make_key("p256")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certpin ct tests")]
    common = cn if cn is not None else (names[0] if names else None)
    if common:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=90))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if san and names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return Issuance(ca, key, builder)
