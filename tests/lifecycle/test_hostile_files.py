"""Hostile certificate, key and chain files: the lifecycle tools' readers (`load_file`,
`load_sources`, `verify_chain_file`, the DER walk) return a value or raise certpin's own error
naming the file and line, in time linear in the file, which is read up to `MAX_FILE_SIZE`."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from _support.pki import PKI, make_key, make_pki
from certpin import CertificateLoadError, CertpinError, ConfigurationError
from certpin.core.der import DERError, spki_from_csr_info
from certpin.core.pins import spki_of_certificate
from certpin.core.sources import MAX_FILE_SIZE, PinSource, load_file, load_sources
from certpin.lifecycle.chain_files import verify_chain_file

from ._helpers import run

_PKI = make_pki()
CERT_DER = _PKI.leaf.cert.public_bytes(serialization.Encoding.DER)
CERT_PEM = _PKI.leaf.cert.public_bytes(serialization.Encoding.PEM)
KEY_PEM = make_key().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


def _outcome(data: bytes) -> list[PinSource] | CertificateLoadError:
    """`load_sources`' result or its error; any other exception fails the test."""
    try:
        return load_sources(data, source="f.pem")
    except CertificateLoadError as exc:
        assert str(exc).startswith("f.pem, line "), exc
        return exc


# -- size ------------------------------------------------------------------------------------------


def test_a_file_larger_than_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "chain.pem"
    path.write_bytes(CERT_PEM + b"#" * (MAX_FILE_SIZE - len(CERT_PEM)))
    assert [s.kind for s in load_file(path)] == ["certificate"]  # exactly the cap: read
    with path.open("ab") as file:
        file.write(b"#")
    with pytest.raises(CertificateLoadError) as info:
        load_file(path)
    assert str(info.value) == (
        f"{path}: the file is larger than the 16 MiB ({MAX_FILE_SIZE} bytes) limit for "
        "certificate, key and CSR files"
    )


def test_many_unusable_blocks_are_summed_up_not_listed() -> None:
    data = b"-----BEGIN X-----\nAA==\n-----END X-----\n" * 1000
    with pytest.raises(CertificateLoadError) as info:
        load_sources(data, source="f.pem")
    assert "X (line 13) and 995 more" in str(info.value) and len(str(info.value)) < 400


def test_a_huge_label_is_shortened_in_messages() -> None:
    with pytest.raises(CertificateLoadError) as info:
        load_sources(b"-----BEGIN " + b"A" * 10**6 + b"-----\n", source="f.pem")
    assert "truncated AAAA" in str(info.value) and len(str(info.value)) < 400


# -- time linear in the file -----------------------------------------------------------------------

_SHAPES = {
    # Each BEGIN line's number used to be counted from the start of the file: 40 000 blocks
    # took 20 s.
    "unusable blocks": (lambda n: b"-----BEGIN X-----\nAA==\n-----END X-----\n" * n, 500),
    "certificates": (lambda n: CERT_PEM * n, 50),
    "keys and certificates": (lambda n: (KEY_PEM + CERT_PEM) * n, 20),
    "begin lines without end": (lambda n: b"-----BEGIN CERTIFICATE-----\n" * n, 2000),
    "long base64 body": (
        lambda n: b"-----BEGIN CERTIFICATE-----\n" + b"QUFB\n" * n + b"-----END CERTIFICATE-----\n",
        5000,
    ),
    "dashes": (lambda n: b"-----BEGIN " + b"-" * n, 20_000),
    "der garbage": (lambda n: b"\x30\x84\x00\x10\x00\x00" + b"\x30\x82" * n, 20_000),
}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_load_sources_is_linear(shape: str) -> None:
    make, base = _SHAPES[shape]
    assert_near_linear(_outcome, make, base=base)


# -- fuzz ------------------------------------------------------------------------------------------


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _outcome(data)


_BODY = base64.encodebytes(CERT_DER)
_PEM_PARTS = st.sampled_from(
    [
        b"-----BEGIN CERTIFICATE-----\n",
        b"-----END CERTIFICATE-----\n",
        b"-----BEGIN PUBLIC KEY-----\n",
        b"-----END PUBLIC KEY-----\n",
        b"-----BEGIN RSA PUBLIC KEY-----\n",
        b"-----BEGIN EC PRIVATE KEY-----\n",
        b"-----END EC PRIVATE KEY-----\n",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE REQUEST-----\n",
        b"-----BEGIN X-----\n",
        b"-----END X-----\n",
        b"-----BEGIN -----\n",
        b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
        _BODY,
        _BODY[:40],
        b"QUFB\n",
        b"====\n",
        b"\r\n",
        b"\xff\xfe",
        b"\x00",
        CERT_PEM,
        KEY_PEM,
    ]
)


@given(st.lists(_PEM_PARTS, max_size=10).map(b"".join))
@settings(max_examples=500, deadline=None)
def test_fuzz_pem_shaped_files(data: bytes) -> None:
    _outcome(data)


@given(st.integers(0, len(CERT_DER) - 1), st.integers(0, 255), st.integers(0, len(CERT_DER)))
@settings(max_examples=500, deadline=None)
def test_fuzz_mutated_der_certificates(where: int, value: int, cut: int) -> None:
    # A byte changed, then the tail cut: every length and tag of the DER walk meets a bad value.
    mutated = (CERT_DER[:where] + bytes([value]) + CERT_DER[where + 1 :])[: max(cut, 1)]
    _outcome(mutated)
    try:
        spki_of_certificate(mutated)
    except DERError as exc:
        assert isinstance(exc, CertpinError)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_fuzz_the_der_walk_raises_certpins_error(data: bytes) -> None:
    for walk in (spki_of_certificate, spki_from_csr_info):
        try:
            walk(data)
        except CertificateLoadError:  # DERError: certpin's, and still a ValueError
            pass


def test_der_error_is_certpins_and_a_value_error() -> None:
    assert issubclass(DERError, CertificateLoadError) and issubclass(DERError, ValueError)


# -- chain files: extensions parse only when asked -------------------------------------------------


def _leaf_with_san(pki: PKI, value: bytes) -> x509.Certificate:
    """A leaf whose SubjectAltName extension holds `value` as raw bytes (signed, so a
    ``cryptography`` load succeeds: only reading the extension fails)."""
    now = dt.datetime.now(dt.UTC)
    key = make_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile")]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, value),
            critical=False,
        )
    )
    return builder.sign(pki.intermediate.key, hashes.SHA256())  # make_pki's keys are P-256


@pytest.mark.parametrize(
    ("san", "problem"),
    [
        (b"\x00garbage", "the leaf certificate's extensions do not parse"),
        (b"\x30\x03\x82\x01\xff", "the leaf certificate's extensions do not parse"),
        (b"\x30\x04\x87\x02\x01\x02", "the leaf certificate's extensions do not parse"),
        (b"\x30\x03\x82\x01*", "does not verify for '*'"),
        (b"\x30\x00", "the leaf certificate has no SubjectAltName names"),
    ],
    ids=["not-der", "bad-dns-name", "one-byte-ip", "star", "empty"],
)
def test_a_hostile_leaf_is_a_configuration_error_naming_the_file(
    tmp_path: Path, san: bytes, problem: str
) -> None:
    chain = tmp_path / "chain.pem"
    leaf = _leaf_with_san(_PKI, san)
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + _PKI.intermediate.cert.public_bytes(serialization.Encoding.PEM)
    )
    root = tmp_path / "root.pem"
    root.write_bytes(_PKI.root.cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigurationError) as info:
        verify_chain_file(str(chain), str(root))
    assert str(info.value).startswith(f"{chain}: ") and problem in str(info.value)


def test_the_well_formed_twin_verifies(tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(
        _PKI.leaf.cert.public_bytes(serialization.Encoding.PEM)
        + _PKI.intermediate.cert.public_bytes(serialization.Encoding.PEM)
    )
    root = tmp_path / "root.pem"
    root.write_bytes(_PKI.root.cert.public_bytes(serialization.Encoding.PEM))
    verified, names = verify_chain_file(str(chain), str(root))
    assert len(verified) == 3 and names == ["localhost", "127.0.0.1"]


def test_rotate_cli_with_a_hostile_next_chain_exits_2_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chain = tmp_path / "next.pem"
    chain.write_bytes(
        _leaf_with_san(_PKI, b"\x00garbage").public_bytes(serialization.Encoding.PEM)
        + _PKI.intermediate.cert.public_bytes(serialization.Encoding.PEM)
    )
    root = tmp_path / "root.pem"
    root.write_bytes(_PKI.root.cert.public_bytes(serialization.Encoding.PEM))
    policy = tmp_path / "pins.json"
    policy.write_text('{"domains": {}}')
    argv = ["rotate", "plan", "--deployed", str(policy), "--next-chain", str(chain)]
    code, _out, err = run(capsys, *argv, "--cafile", str(root))
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and str(chain) in err
