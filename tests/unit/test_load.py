"""certpin.core.sources: pins from certificates, public keys, private keys and CSRs, PEM and DER."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from _support.pki import KEY_TYPES, KeyType, make_key, new_root, spki_der, spki_pin
from certpin import CertificateLoadError, Pin, PinKind
from certpin.core.sources import PinSource, load_file, load_sources

OPENSSL = "/usr/bin/openssl"
CHROMIUM = Path(__file__).resolve().parent.parent / "data" / "chromium-spki-2016"
PASSWORD = b"correct horse battery staple"

_KEY_TYPE_NAMES = {
    "rsa2048": "RSA 2048",
    "rsa3072": "RSA 3072",
    "p256": "EC P-256",
    "p384": "EC P-384",
    "p521": "EC P-521",
    "ed25519": "Ed25519",
    "ed448": "Ed448",
}


def _openssl_pin(cert_pem: Path) -> str:
    """``openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | dgst | base64``."""
    pubkey = subprocess.run(
        [OPENSSL, "x509", "-pubkey", "-noout", "-in", str(cert_pem)],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        [OPENSSL, "pkey", "-pubin", "-outform", "der"],
        input=pubkey,
        check=True,
        capture_output=True,
    ).stdout
    digest = subprocess.run(
        [OPENSSL, "dgst", "-sha256", "-binary"], input=der, check=True, capture_output=True
    ).stdout
    return "sha256/" + base64.b64encode(digest).decode("ascii")


def _csr_pem(key: object, cn: str = "csr.example") -> bytes:
    algorithm = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else (hashes.SHA256())
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, algorithm)  # type: ignore[arg-type]
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _one(data: bytes, name: str = "x.pem", password: bytes | None = None) -> PinSource:
    sources = load_sources(data, source=name, password=password)
    assert len(sources) == 1, sources
    return sources[0]


# -- every key type, every container ---------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_all_containers_agree_with_each_other_and_openssl(key_type: KeyType, tmp_path: Path):
    key = make_key(key_type)
    root = new_root(key=key)
    pub = key.public_key()
    spki = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    enc_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD),
    )
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_path = tmp_path / "cert.pem"
    cert_path.write_bytes(root.pem())

    from_cert = load_file(cert_path)[0]
    results = {
        "cert PEM": from_cert,
        "cert DER": _one(root.der(), "cert.der"),
        "public key PEM": _one(pub_pem),
        "public key DER": _one(spki, "key.der"),
        "private key PEM": _one(key_pem),
        "private key DER": _one(key_der, "key.der"),
        "encrypted private key PEM": _one(enc_pem, password=PASSWORD),
        "CSR PEM": _one(_csr_pem(key)),
    }
    expected = _openssl_pin(cert_path)
    assert expected == spki_pin(root)
    assert {name: str(src.pin) for name, src in results.items()} == dict.fromkeys(results, expected)
    assert {src.key_type for src in results.values()} == {_KEY_TYPE_NAMES[key_type]}
    assert results["public key DER"].line is None and results["cert PEM"].line == 1

    assert from_cert.kind == "certificate"
    assert from_cert.cert_sha256 == Pin(
        hashlib.sha256(root.der()).digest(), kind=PinKind.CERTIFICATE
    )
    assert from_cert.is_ca is True
    assert from_cert.subject == root.cert.subject.rfc4514_string() == from_cert.issuer
    assert from_cert.not_after == root.cert.not_valid_after_utc
    assert from_cert.not_after is not None and from_cert.not_after.tzinfo is not None
    assert from_cert.der == root.der() and from_cert.spki == spki
    assert results["private key PEM"].kind == "private-key"
    assert results["private key PEM"].der == spki  # the secret is never kept
    assert results["CSR PEM"].kind == "csr"
    assert results["CSR PEM"].subject == "CN=csr.example"
    assert results["public key PEM"].kind == "public-key"


def test_traditional_and_pkcs1_encodings():
    key = make_key("rsa2048")
    expected = spki_pin(key)
    trad = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    trad_enc = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSWORD),
    )
    pkcs1 = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    enc_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD),
    )
    assert trad.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert b"Proc-Type: 4,ENCRYPTED" in trad_enc
    assert pkcs1.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    assert str(_one(trad).pin) == expected
    assert str(_one(trad_enc, password=PASSWORD).pin) == expected
    assert str(_one(pkcs1).pin) == expected
    assert str(_one(enc_der, "k.der", password=PASSWORD).pin) == expected
    ec_key = make_key("p256")
    ec_trad = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert ec_trad.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert str(_one(ec_trad).pin) == spki_pin(ec_key)


def test_many_blocks_keep_order_and_skip_unrelated_ones(pki):
    key = make_key("p256")
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    data = (
        b"Bag Attributes: text outside blocks is ignored\n"
        + pki.leaf.pem()
        + pki.intermediate.pem()
        + params
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + pki.root.pem().replace(b"CERTIFICATE", b"X509 CERTIFICATE")
        + _csr_pem(key).replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    )
    sources = load_sources(data, source="bundle.pem", password=b"unused for plain keys")
    assert [s.kind for s in sources] == [
        "certificate",
        "certificate",
        "private-key",
        "certificate",
        "csr",
    ]
    assert [s.position for s in sources] == [0, 1, 2, 3, 4]
    assert {s.source for s in sources} == {"bundle.pem"}
    assert [str(s.pin) for s in sources] == [
        spki_pin(pki.leaf),
        spki_pin(pki.intermediate),
        spki_pin(key),
        spki_pin(pki.root),
        spki_pin(key),
    ]
    assert [s.is_ca for s in sources] == [False, True, None, True, None]
    lines = data.decode().splitlines()
    for src in sources:
        assert src.line is not None and lines[src.line - 1].startswith("-----BEGIN ")


def test_chromium_2016_vectors():
    expected = json.loads((CHROMIUM / "expected.json").read_text())
    assert len(expected) == 69
    got = {}
    for name in expected:
        (src,) = load_file(CHROMIUM / f"{name}.pem")
        got[name] = str(src.pin)
        if src.kind == "certificate":
            assert src.pin == Pin.for_certificate(src.der)
    assert got == expected


# -- RFC 7469 §2.4: hash the SPKI as encoded -------------------------------------------------------

_RSA_ALG_WITH_NULL = bytes.fromhex("300d06092a864886f70d0101010500")
_RSA_ALG_WITHOUT_NULL = bytes.fromhex("300b06092a864886f70d010101")


def _rsa_spki_without_null() -> tuple[bytes, bytes]:
    key = make_key("rsa2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    spki = spki_der(key)
    # 30 82 0122 | AlgorithmIdentifier (with NULL) | BIT STRING: drop the NULL, fix the length.
    assert spki[:4] == bytes.fromhex("30820122") and spki[4:19] == _RSA_ALG_WITH_NULL
    raw = bytes.fromhex("30820120") + _RSA_ALG_WITHOUT_NULL + spki[19:]
    return raw, spki


def test_unusual_spki_encoding_is_hashed_as_given():
    raw, reencoded = _rsa_spki_without_null()
    assert Pin.for_spki(raw) != Pin.for_spki(reencoded)
    # cryptography accepts the encoding, and re-encodes it with the NULL.
    loaded = serialization.load_der_public_key(raw)
    assert (
        loaded.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == reencoded
    )
    pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(raw) + b"-----END PUBLIC KEY-----\n"
    assert _one(pem).pin == Pin.for_spki(raw)
    assert _one(raw, "raw.der").pin == Pin.for_spki(raw)
    assert _one(pem).spki == raw


def test_unusual_spki_encoding_in_a_certificate_is_hashed_as_encoded():
    """A certificate whose TBS carries the NULL-less RSA SPKI: the pin is of those bytes.

    The signature is not valid after the edit; pin computation does not verify signatures.
    """
    raw, reencoded = _rsa_spki_without_null()
    key = serialization.load_der_public_key(reencoded)
    issuer = make_key("p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key)  # type: ignore[arg-type]
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(issuer, hashes.SHA256())  # type: ignore[arg-type]
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(reencoded) == 1
    edited = _reencode_sequences(der.replace(reencoded, raw))
    src = _one(edited, "odd.der")
    assert src.kind == "certificate"
    assert src.spki == raw
    assert src.pin == Pin.for_spki(raw) != Pin.for_spki(reencoded)


def _reencode_sequences(der: bytes) -> bytes:
    """Fix the lengths of Certificate and TBSCertificate after the SPKI shrank by 2 bytes."""

    def tlv(tag: int, content: bytes) -> bytes:
        n = len(content)
        if n < 0x80:
            return bytes([tag, n]) + content
        size = (n.bit_length() + 7) // 8
        return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content

    def split(data: bytes) -> list[bytes]:
        out, pos = [], 0
        while pos < len(data):
            first = data[pos + 1]
            if first < 0x80:
                start, length = pos + 2, first
            else:
                count = first & 0x7F
                start = pos + 2 + count
                length = int.from_bytes(data[pos + 2 : start], "big")
            out.append(data[pos : start + length])
            pos = start + length
        return out

    # The outer lengths are stale: skip both headers, then split TBS fields + signatureAlgorithm
    # + signatureValue (each still correctly encoded) and rebuild the two SEQUENCEs around them.
    outer_hdr = 2 + (der[1] & 0x7F if der[1] >= 0x80 else 0)
    tbs_hdr = 2 + (der[outer_hdr + 1] & 0x7F if der[outer_hdr + 1] >= 0x80 else 0)
    parts = split(der[outer_hdr + tbs_hdr :])
    tbs_fields, rest = parts[:-2], parts[-2:]
    tbs = tlv(0x30, b"".join(tbs_fields))
    return tlv(0x30, tbs + b"".join(rest))


# -- errors ----------------------------------------------------------------------------------------


def _error(data: bytes, name: str = "bad.pem", password: bytes | None = None) -> str:
    with pytest.raises(CertificateLoadError) as info:
        load_sources(data, source=name, password=password)
    return str(info.value)


def test_empty_file():
    for data in (b"", b"\n  \n"):
        msg = _error(data, "empty.pem")
        assert msg.startswith("empty.pem, line 1: ") and "empty" in msg


def test_garbage_file():
    msg = _error(b"hello, this is not a certificate\n", "junk.pem")
    assert msg.startswith("junk.pem, line 1: ") and "PEM" in msg and "DER" in msg
    msg = _error(b"\x30\x03\x02\x01\x05", "junk.der")
    assert msg.startswith("junk.der, line 1: ") and "DER" in msg


def test_truncated_pem(pki):
    pem = pki.leaf.pem()
    cut = pki.root.pem() + b"\n" + pem[: len(pem) // 2]
    line = pki.root.pem().count(b"\n") + 2
    msg = _error(cut, "ca.pem")
    assert msg.startswith(f"ca.pem, line {line}: ")
    assert "truncated CERTIFICATE block" in msg and "-----END CERTIFICATE-----" in msg
    # An END line missing before the next BEGIN is truncation too.
    msg = _error(pem.replace(b"-----END CERTIFICATE-----\n", b"") + pki.root.pem(), "ca.pem")
    assert msg.startswith("ca.pem, line 1: ") and "before the next BEGIN" in msg


def test_corrupt_block_names_its_line(pki):
    body = pki.root.pem() + pki.leaf.pem().replace(b"M", b"*", 3)
    line = pki.root.pem().count(b"\n") + 1
    msg = _error(body, "chain.pem")
    assert msg.startswith(f"chain.pem, line {line}: ") and "base64" in msg
    bogus = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    msg = _error(pki.root.pem() + bogus, "chain.pem")
    assert msg.startswith(f"chain.pem, line {line}: ") and "X.509 certificate" in msg
    msg = _error(bogus.replace(b"CERTIFICATE", b"PUBLIC KEY"), "k.pem")
    assert msg.startswith("k.pem, line 1: ") and "SubjectPublicKeyInfo" in msg


def test_only_unrelated_blocks():
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    msg = _error(b"\n" + params, "params.pem")
    assert msg.startswith("params.pem, line 2: ") and "EC PARAMETERS" in msg
    assert "expected CERTIFICATE" in msg


def test_encrypted_key_password_errors():
    key = make_key("p256")
    enc = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD),
    )
    data = b"# my key\n" + enc
    msg = _error(data, "key.pem")
    assert msg.startswith("key.pem, line 2: ")
    assert "--password-file" in msg and "encrypted" in msg
    msg = _error(data, "key.pem", password=b"wrong")
    assert msg.startswith("key.pem, line 2: ") and "wrong password" in msg
    enc_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD),
    )
    msg = _error(enc_der, "key.der")
    assert msg.startswith("key.der, line 1: ") and "--password-file" in msg
    msg = _error(enc_der, "key.der", password=b"wrong")
    assert "wrong password" in msg


def test_load_file_unreadable(tmp_path: Path):
    with pytest.raises(CertificateLoadError, match=r"missing\.pem: cannot read"):
        load_file(tmp_path / "missing.pem")


def test_pin_source_is_frozen_and_hides_der(pki):
    src = _one(pki.leaf.pem())
    with pytest.raises(AttributeError):
        src.kind = "csr"  # type: ignore[misc]
    assert "der=" not in repr(src) and "spki=" not in repr(src)
    assert src.pin_for("sha384") == Pin.for_spki(src.spki, "sha384")
