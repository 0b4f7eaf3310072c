"""certpin.core.der: lifting the SubjectPublicKeyInfo out of certificates and CSRs byte-for-byte."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from _support.pki import new_root, spki_der
from certpin.core.der import DERError, read_tlv, spki_from_csr_info, spki_from_tbs_certificate
from certpin.core.pins import spki_of_certificate

VECTORS = Path(__file__).resolve().parent.parent / "data" / "chromium-spki-2016"


def tlv(tag: int, content: bytes) -> bytes:
    """DER-encode one element (short or long form length, minimal)."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def elements(data: bytes) -> list[bytes]:
    """The encoded child elements of a DER SEQUENCE."""
    _tag, pos, end = read_tlv(data, 0)
    out = []
    while pos < end:
        _t, _c, nxt = read_tlv(data, pos)
        out.append(data[pos:nxt])
        pos = nxt
    return out


def pem_der(path: Path) -> bytes:
    body = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("-----")]
    return base64.b64decode("".join(body))


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    return new_root("DER test root").cert


def tbs_of(cert: x509.Certificate) -> bytes:
    return cert.tbs_certificate_bytes


# -- TBSCertificate --------------------------------------------------------------------------------


def test_v3_tbs_with_explicit_version(cert: x509.Certificate) -> None:
    tbs = tbs_of(cert)
    assert elements(tbs)[0][0] == 0xA0  # [0] EXPLICIT version is present
    assert spki_from_tbs_certificate(tbs) == spki_der(cert)


def test_v1_tbs_without_version_field(cert: x509.Certificate) -> None:
    # A v1 certificate omits the version: the SPKI is then the 6th element, not the 7th.
    fields = elements(tbs_of(cert))
    v1_tbs = tlv(0x30, b"".join(fields[1:7]))
    assert spki_from_tbs_certificate(v1_tbs) == spki_der(cert)


@pytest.mark.parametrize(
    "name",
    ["VeriSignClass3_G3", "GTECyberTrustGlobalRoot", "VeriSignClass1"],
)
def test_real_v1_certificates(name: str) -> None:
    der = pem_der(VECTORS / f"{name}.pem")
    loaded = x509.load_der_x509_certificate(der)
    assert loaded.version is x509.Version.v1
    assert spki_of_certificate(der) == spki_der(loaded)


def test_long_form_lengths(cert: x509.Certificate) -> None:
    tbs = tbs_of(cert)
    assert tbs[1] & 0x80  # the TBS itself uses a long-form length
    # Re-encode the SPKI with a deliberately long (two-byte) length field: still found, as given.
    fields = elements(tbs)
    spki = fields[6]
    _t, content, _e = read_tlv(spki, 0)
    body = spki[content:]
    long_spki = bytes([0x30, 0x82]) + len(body).to_bytes(2, "big") + body
    tbs2 = tlv(0x30, b"".join(fields[:6]) + long_spki + b"".join(fields[7:]))
    assert spki_from_tbs_certificate(tbs2) == long_spki


def test_read_tlv_short_and_long_forms() -> None:
    assert read_tlv(b"\x04\x02ab", 0) == (0x04, 2, 4)
    assert read_tlv(b"\x04\x81\x02ab", 0) == (0x04, 3, 5)
    big = b"x" * 300
    assert read_tlv(tlv(0x04, big), 0) == (0x04, 4, 304)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\x30", "truncated"),
        (b"\x30\x80\x00\x00", "invalid DER length"),  # BER indefinite length: DER forbids it
        (b"\x30\x85\x00\x00\x00\x00\x01", "invalid DER length"),  # > 4 length bytes
        (b"\x30\x82\x01", "invalid DER length"),  # length bytes missing
        (b"\x30\x05abc", "runs past the end"),
        (b"\x1f\x01\x00", "high-tag-number"),
    ],
)
def test_read_tlv_rejects(data: bytes, problem: str) -> None:
    with pytest.raises(DERError, match=problem):
        read_tlv(data, 0)


def test_der_error_is_value_error() -> None:
    assert issubclass(DERError, ValueError)


@pytest.mark.parametrize(
    ("tbs", "problem"),
    [
        (b"", "truncated"),
        (tlv(0x31, b""), "single DER SEQUENCE"),  # a SET, not a SEQUENCE
        (tlv(0x30, b"") + b"\x00", "single DER SEQUENCE"),  # trailing bytes
        (tlv(0x30, tlv(0x02, b"\x01")), "truncated"),  # too few fields
        # six fields, but the 6th is an INTEGER, not a SEQUENCE
        (tlv(0x30, tlv(0x02, b"\x01") * 6), "not a SEQUENCE"),
    ],
)
def test_tbs_rejects_garbage(tbs: bytes, problem: str) -> None:
    with pytest.raises(DERError, match=problem):
        spki_from_tbs_certificate(tbs)


def test_truncated_tbs(cert: x509.Certificate) -> None:
    tbs = tbs_of(cert)
    for cut in (1, 10, len(tbs) // 2, len(tbs) - 1):
        with pytest.raises(DERError):
            spki_from_tbs_certificate(tbs[:cut])


def test_version_only_tbs_is_rejected() -> None:
    with pytest.raises(DERError, match="truncated"):
        spki_from_tbs_certificate(tlv(0x30, tlv(0xA0, tlv(0x02, b"\x02"))))


# -- certificates ----------------------------------------------------------------------------------


def test_spki_of_certificate(cert: x509.Certificate) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    assert spki_of_certificate(der) == spki_der(cert)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: d + b"\x00", id="trailing-byte"),
        pytest.param(lambda d: b"\x31" + d[1:], id="not-a-sequence"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(lambda d: b"\x30\x00", id="empty-sequence"),
    ],
)
def test_spki_of_certificate_rejects(cert: x509.Certificate, mutate: object) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(DERError):
        spki_of_certificate(mutate(der))  # type: ignore[operator]


# -- CSRs ------------------------------------------------------------------------------------------


def test_csr_info() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr.example")]))
        .sign(key, hashes.SHA256())
    )
    expected = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_from_csr_info(csr.tbs_certrequest_bytes) == expected
    # The CSR version is a plain INTEGER, not [0]: it must not be skipped as a certificate's is.
    with pytest.raises(DERError):
        spki_from_csr_info(csr.tbs_certrequest_bytes[:20])


# -- properties ------------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_value_error(data: bytes) -> None:
    for func in (spki_from_tbs_certificate, spki_from_csr_info, spki_of_certificate):
        try:
            result = func(data)
        except ValueError:
            continue
        assert isinstance(result, bytes)
        assert result[0] == 0x30
        assert result in data


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=3))
def test_sequence_wrapped_bytes_raise_only_value_error(body: bytes, wraps: int) -> None:
    data = body
    for _ in range(wraps):
        data = tlv(0x30, data)
    try:
        result = spki_from_tbs_certificate(data)
    except ValueError:
        return
    assert result[0] == 0x30
    assert result in data
