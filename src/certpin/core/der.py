"""Just enough DER to lift the SubjectPublicKeyInfo out of a certificate or CSR byte-for-byte.

RFC 7469 §2.4 pins the SPKI *as encoded in the certificate*. `cryptography` only hands out a
re-encoding of the loaded key, which differs for legal but unusual encodings (an RSA
AlgorithmIdentifier without NULL parameters, explicit EC curve parameters), and other pinning
clients (Chromium, OkHttp, curl) hash the original bytes. So we walk the TBS structure ourselves.
"""

from __future__ import annotations

from certpin._errors import CertificateLoadError

__all__ = ["DERError", "read_tlv", "spki_from_csr_info", "spki_from_tbs_certificate"]

_SEQUENCE = 0x30
_VERSION_TAG = 0xA0  # [0] EXPLICIT Version in TBSCertificate


class DERError(CertificateLoadError):
    """Malformed DER.

    A `CertificateLoadError` (so also a ValueError, as it always was): bytes from outside that
    reach `certpin.Pin.for_certificate` or the verdict must fail as certpin's own error.
    """


def read_tlv(data: bytes, offset: int, limit: int | None = None) -> tuple[int, int, int]:
    """Return (tag, start of content, end of element) for the element at `offset`, which must
    lie within ``data[:limit]`` (default: all of `data`)."""
    end_of_data = len(data) if limit is None else limit
    if offset + 2 > end_of_data:
        raise DERError("truncated DER element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DERError("high-tag-number form is not used in these structures")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        # 0x80 is BER's indefinite length; DER forbids it. Four bytes is ample for any certificate.
        if count == 0 or count > 4 or pos + count > end_of_data:
            raise DERError("invalid DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        # Non-minimal long-form lengths are not DER, but are accepted: OpenSSL verified the
        # certificate, and the pin is the hash of the SPKI bytes exactly as they stand.
        pos += count
    end = pos + length
    if end > end_of_data:
        raise DERError("DER element runs past the end of its container")
    return tag, pos, end


def _nth_field(tbs: bytes, skip_version: bool, index: int) -> bytes:
    tag, pos, end = read_tlv(tbs, 0)
    if tag != _SEQUENCE or end != len(tbs):
        raise DERError("expected a single DER SEQUENCE")
    if skip_version and pos < end and tbs[pos] == _VERSION_TAG:
        pos = read_tlv(tbs, pos)[2]
    for _ in range(index):
        # read_tlv bounds every element by len(tbs) == end, so pos never passes end.
        pos = read_tlv(tbs, pos)[2]
    tag, _content, field_end = read_tlv(tbs, pos)
    if tag != _SEQUENCE or field_end > end:
        raise DERError("SubjectPublicKeyInfo is not a SEQUENCE")
    return tbs[pos:field_end]


def spki_from_tbs_certificate(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo bytes of a DER TBSCertificate (RFC 5280 §4.1).

    Fields before it: [version], serialNumber, signature, issuer, validity, subject.
    """
    return _nth_field(tbs, True, 5)


def spki_from_csr_info(info: bytes) -> bytes:
    """The SubjectPublicKeyInfo bytes of a DER CertificationRequestInfo (RFC 2986 §4.1).

    Fields before it: version, subject.
    """
    return _nth_field(info, False, 2)
