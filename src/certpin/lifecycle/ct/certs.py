"""Names first: just enough DER to read a logged certificate's DNS names and its issuance key.

A watcher reads millions of certificates to find the few a policy covers, so it never fully
parses one it does not need: `dns_names` walks the TBSCertificate straight to the
subjectAltName extension (or the subject's CN when there are no DNS names), and only a covered
certificate is handed to `cryptography` and the verdict. `issuance_tbs` gives the TBS that a
precertificate and its final certificate share (RFC 6962 §3.2: the final certificate's TBS minus
the SCT list, the precertificate's minus the poison), whose SHA-256 is certspotter's
``TBS_SHA256`` too.

Every length is checked against its container (`EntryError` otherwise); nothing here allocates
more than the input's size.
"""

from __future__ import annotations

from certpin.core.der import DERError, read_tlv
from certpin.lifecycle.ct.errors import EntryError

__all__ = ["dns_names", "issuance_tbs", "serial_and_key", "tbs_of_certificate"]

_SEQUENCE, _SET, _OID, _BOOLEAN, _OCTET_STRING = 0x30, 0x31, 0x06, 0x01, 0x04
_VERSION, _EXTENSIONS, _DNS_NAME = 0xA0, 0xA3, 0x82
_OID_SAN = b"\x55\x1d\x11"  # 2.5.29.17
_OID_CN = b"\x55\x04\x03"  # 2.5.4.3
_OID_SCT_LIST = b"\x2b\x06\x01\x04\x01\xd6\x79\x02\x04\x02"  # 1.3.6.1.4.1.11129.2.4.2
_OID_POISON = b"\x2b\x06\x01\x04\x01\xd6\x79\x02\x04\x03"  # 1.3.6.1.4.1.11129.2.4.3
#: a directory string's tag -> its codec (X.520; TeletexString read as Latin-1, as browsers do)
_STRINGS = {
    0x0C: "utf-8",
    0x13: "ascii",
    0x16: "ascii",
    0x14: "latin-1",
    0x1E: "utf-16-be",
    0x1C: "utf-32-be",
}


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, element end) of the DER element at `pos`, within `data[:end]`:
    the core's DER walk, its errors as a log entry's."""
    try:
        return read_tlv(data, pos, end)
    except DERError as exc:
        raise EntryError(f"certificate: {exc}") from None


def tbs_of_certificate(cert: bytes) -> bytes:
    """The TBSCertificate element of a DER Certificate."""
    tag, start, stop = _tlv(cert, 0, len(cert))
    if tag != _SEQUENCE:
        raise EntryError("certificate: not a DER SEQUENCE")
    tag, _, tbs_end = _tlv(cert, start, stop)
    if tag != _SEQUENCE:
        raise EntryError("certificate: the TBSCertificate is not a SEQUENCE")
    return cert[start:tbs_end]


def _fields(tbs: bytes) -> tuple[int, int, int, int]:
    """(subject start, subject end, extensions content start, end) of a TBSCertificate; the
    extensions span is (0, 0) when there are none."""
    tag, pos, end = _tlv(tbs, 0, len(tbs))
    if tag != _SEQUENCE or end != len(tbs):
        raise EntryError("certificate: the TBSCertificate is not one DER SEQUENCE")
    if pos < end and tbs[pos] == _VERSION:
        pos = _tlv(tbs, pos, end)[2]
    for _ in range(4):  # serialNumber, signature, issuer, validity
        pos = _tlv(tbs, pos, end)[2]
    tag, _, subject_end = _tlv(tbs, pos, end)
    if tag != _SEQUENCE:
        raise EntryError("certificate: the subject is not a SEQUENCE")
    subject = pos
    pos = _tlv(tbs, subject_end, end)[2]  # subjectPublicKeyInfo
    while pos < end:  # [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions
        tag, content, stop = _tlv(tbs, pos, end)
        if tag == _EXTENSIONS:
            tag, inner, inner_end = _tlv(tbs, content, stop)
            if tag != _SEQUENCE or inner_end != stop:
                raise EntryError("certificate: extensions are not one SEQUENCE")
            return subject, subject_end, inner, inner_end
        pos = stop
    return subject, subject_end, 0, 0


def serial_and_key(tbs: bytes) -> tuple[bytes, bytes]:
    """The serialNumber and subjectPublicKeyInfo elements of a TBSCertificate, as encoded.

    A precertificate and the TBS a log made of it share both, even when a precertificate
    signing certificate made the log rewrite the issuer (RFC 6962 §3.2).
    """
    tag, pos, end = _tlv(tbs, 0, len(tbs))
    if tag != _SEQUENCE:
        raise EntryError("certificate: the TBSCertificate is not a SEQUENCE")
    if pos < end and tbs[pos] == _VERSION:
        pos = _tlv(tbs, pos, end)[2]
    serial_end = _tlv(tbs, pos, end)[2]
    serial = tbs[pos:serial_end]
    pos = serial_end
    for _ in range(4):  # signature, issuer, validity, subject
        pos = _tlv(tbs, pos, end)[2]
    return serial, tbs[pos : _tlv(tbs, pos, end)[2]]


def _extension(tbs: bytes, pos: int, end: int) -> tuple[bytes, int, int, int]:
    """(extnID, value start, value end, element end) of the Extension at `pos`."""
    tag, content, stop = _tlv(tbs, pos, end)
    if tag != _SEQUENCE:
        raise EntryError("certificate: an extension is not a SEQUENCE")
    tag, oid_start, value = _tlv(tbs, content, stop)
    if tag != _OID:
        raise EntryError("certificate: an extension without an OID")
    oid = tbs[oid_start:value]
    if value < stop and tbs[value] == _BOOLEAN:
        value = _tlv(tbs, value, stop)[2]
    tag, value_start, value_end = _tlv(tbs, value, stop)
    if tag != _OCTET_STRING or value_end != stop:
        raise EntryError("certificate: an extension value is not an OCTET STRING")
    return oid, value_start, value_end, stop


def dns_names(tbs: bytes) -> list[str]:
    """The DNS names of a TBSCertificate: subjectAltName dNSNames, else the subject's CNs.

    Names are returned as written (case kept; a byte that is not ASCII becomes U+FFFD, so such a
    name can never match a policy key).
    """
    subject, subject_end, pos, end = _fields(tbs)
    names: list[str] = []
    while pos < end:
        oid, value, value_end, pos = _extension(tbs, pos, end)
        if oid != _OID_SAN:
            continue
        tag, cursor, stop = _tlv(tbs, value, value_end)
        if tag != _SEQUENCE or stop != value_end:
            raise EntryError("certificate: subjectAltName is not a SEQUENCE")
        while cursor < stop:
            tag, content, after = _tlv(tbs, cursor, stop)
            if tag == _DNS_NAME:
                names.append(tbs[content:after].decode("ascii", "replace"))
            cursor = after
    if names:
        return names
    return _common_names(tbs, subject, subject_end)


def _common_names(tbs: bytes, start: int, end: int) -> list[str]:
    names = []
    _, pos, end = _tlv(tbs, start, end)
    while pos < end:
        tag, rdn, rdn_end = _tlv(tbs, pos, end)
        if tag != _SET:
            raise EntryError("certificate: a subject RDN is not a SET")
        pos = rdn_end
        while rdn < rdn_end:
            tag, atv, atv_end = _tlv(tbs, rdn, rdn_end)
            rdn = atv_end
            tag, oid, value = _tlv(tbs, atv, atv_end)
            if tag != _OID or tbs[oid:value] != _OID_CN:
                continue
            tag, text, text_end = _tlv(tbs, value, atv_end)
            codec = _STRINGS.get(tag)
            if codec is not None:
                names.append(tbs[text:text_end].decode(codec, "replace"))
    return names


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def issuance_tbs(tbs: bytes) -> bytes:
    """`tbs` without the CT poison and SCT list extensions: the TBS a precertificate and its
    final certificate share (re-encoded only when something was removed)."""
    _, _, start, end = _fields(tbs)
    kept: list[bytes] = []
    removed = False
    pos = start
    while pos < end:
        oid, _, _, stop = _extension(tbs, pos, end)
        if oid in (_OID_SCT_LIST, _OID_POISON):
            removed = True
        else:
            kept.append(tbs[pos:stop])
        pos = stop
    if not removed:
        return tbs
    # Rebuild outwards: Extensions SEQUENCE, its [3] wrapper, then the TBSCertificate itself.
    _, content, _ = _tlv(tbs, 0, len(tbs))
    wrapper = _der(_EXTENSIONS, _der(_SEQUENCE, b"".join(kept)))
    # `start` is the Extensions' content; find where the [3] wrapper began by walking fields.
    pos = content
    while True:
        tag, _, stop = _tlv(tbs, pos, len(tbs))
        if tag == _EXTENSIONS:
            break
        pos = stop
    return _der(_SEQUENCE, tbs[content:pos] + wrapper + tbs[stop:])
