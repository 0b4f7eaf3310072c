"""Pin values: parsing every accepted notation, refusing the rest, computing pins."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from _support.pki import KEY_TYPES, cert_sha256, make_pki, new_root, spki_der, spki_pin
from certpin import Pin, PinFormatError, PinKind
from certpin.core.pins import DIGEST_SIZES

VECTORS = Path(__file__).resolve().parent.parent / "data" / "chromium-spki-2016"
EXPECTED: dict[str, str] = json.loads((VECTORS / "expected.json").read_text())

DIGEST = bytes(range(32))
B64 = base64.b64encode(DIGEST).decode()  # AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
HEX = DIGEST.hex()
SPKI_PIN = Pin(DIGEST)
CERT_PIN = Pin(DIGEST, "sha256", PinKind.CERTIFICATE)


def b64(n: int, fill: int = 7) -> str:
    return base64.b64encode(bytes([fill]) * n).decode()


def pem_der(path: Path) -> tuple[str, bytes]:
    lines = path.read_text().splitlines()
    label = lines[0].removeprefix("-----BEGIN ").removesuffix("-----")
    body = "".join(ln for ln in lines if ln and not ln.startswith("-----"))
    return label, base64.b64decode(body)


# -- parsing: accepted notations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"sha256/{B64}",
        f"  sha256/{B64}\n",
        f"SHA256/{B64}",
        f"sha-256/{B64}",
        f'pin-sha256="{B64}"',
        f'pin-sha256 = "{B64}"',
        f"pin-sha256={B64}",
        f"sha256//{B64}",  # curl --pinnedpubkey
    ],
)
def test_parse_spki_sha256(text: str) -> None:
    pin = Pin.parse(text)
    assert pin == SPKI_PIN
    assert pin.kind is PinKind.SPKI
    assert str(pin) == f"sha256/{B64}"


@pytest.mark.parametrize("alg", ["sha384", "sha512"])
def test_parse_longer_digests(alg: str) -> None:
    size = DIGEST_SIZES[alg]
    pin = Pin.parse(f"{alg}/{b64(size)}")
    assert pin == Pin(bytes([7]) * size, alg)
    assert Pin.parse(f"cert-{alg}/{b64(size)}") == Pin(bytes([7]) * size, alg, PinKind.CERTIFICATE)
    assert Pin.parse(f'pin-{alg}="{b64(size)}"').algorithm == alg


def test_parse_certificate_pin() -> None:
    pin = Pin.parse(f"cert-sha256/{B64}")
    assert pin == CERT_PIN
    assert pin != SPKI_PIN  # same digest, different kind: different pins
    assert str(pin) == f"cert-sha256/{B64}"


@pytest.mark.parametrize(
    "text",
    [
        HEX,
        HEX.upper(),
        ":".join(f"{b:02X}" for b in DIGEST),
        " ".join(f"{b:02x}" for b in DIGEST),
        "SHA256 Fingerprint=" + ":".join(f"{b:02X}" for b in DIGEST),  # openssl x509 -fingerprint
        "sha256 Fingerprint=" + HEX,
        "SHA-256:" + HEX,
        "sha256=" + HEX,
    ],
)
def test_parse_hex_fingerprint_is_certificate_kind(text: str) -> None:
    pin = Pin.parse(text)
    assert pin == CERT_PIN
    assert pin.kind is PinKind.CERTIFICATE


@pytest.mark.parametrize(("alg", "size"), [("sha384", 48), ("sha512", 64)])
def test_parse_longer_hex_fingerprints(alg: str, size: int) -> None:
    digest = bytes(range(size))
    assert Pin.parse(digest.hex()) == Pin(digest, alg, PinKind.CERTIFICATE)
    assert Pin.parse(f"{alg.upper()} Fingerprint={digest.hex()}").algorithm == alg


def test_slash_leading_base64_round_trips() -> None:
    # base64 of a digest starting with 0xFC..0xFF begins with "/": "sha256//…" is then ambiguous
    # with curl's separator and must still read back as the same pin.
    pin = Pin(b"\xff" * 32)
    assert str(pin).startswith("sha256///")
    assert Pin.parse(str(pin)) == pin
    assert Pin.parse("sha256//" + pin.base64) == pin  # curl spelling of the same pin
    cert = Pin(b"\xfc" + bytes(31), kind=PinKind.CERTIFICATE)
    assert Pin.parse(str(cert)) == cert


# -- parsing: refused inputs -----------------------------------------------------------------------


def flip_last_char(b64text: str) -> str:
    """Change unused low bits of the last base64 character (a non-canonical spelling)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stem = b64text.rstrip("=")
    padding = b64text[len(stem) :]
    last = alphabet.index(stem[-1])
    flipped = alphabet[last ^ 1]
    return stem[:-1] + flipped + padding


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sha256/not base64!", "not valid base64"),
        ("sha256/" + B64.rstrip("="), "not valid base64"),  # missing padding
        ("sha256/" + flip_last_char(B64), "not canonical base64"),
        ("sha256/" + b64(20), "decodes to 20 bytes, but a sha256 digest has 32"),
        ("sha384/" + B64, "decodes to 32 bytes, but a sha384 digest has 48"),
        ("sha256/", "decodes to 0 bytes"),
        ("sha3/" + B64, "unknown algorithm 'sha3'"),
        ("blake2b/" + B64, "unknown algorithm 'blake2b'"),
        ("cert-sha1/" + b64(20), "SHA-1"),
        ("sha1/" + b64(20), "SHA-1"),
        ("SHA-1/" + b64(20), "SHA-1"),
        ("md5/" + b64(16), "MD5"),
        ('pin-sha1="' + b64(20) + '"', "SHA-1"),
        ('pin-sha256="' + b64(31) + '"', "decodes to 31 bytes"),
        ("a" * 40, "SHA-1 fingerprint (20 bytes)"),
        (":".join(["AB"] * 20), "SHA-1 fingerprint"),
        ("a" * 32, "MD5 fingerprint (16 bytes)"),
        ("SHA1 Fingerprint=" + ":".join(["AB"] * 20), "SHA-1"),
        ("MD5 Fingerprint=" + ":".join(["AB"] * 16), "MD5"),
        ("a" * 62, "31 bytes of hex"),
        ("a" * 66, "33 bytes of hex"),
        ("SHA384 Fingerprint=" + HEX, "32 bytes of hex"),  # named algorithm disagrees with length
        ("zz:yy", "cannot parse pin"),
        ("hello", "cannot parse pin"),
        ("SHA256 Fingerprint=", "cannot parse pin"),
        ("a" * 63 + "\n:", "cannot parse pin"),  # "$" would have matched before the newline
        ("", "empty pin"),
        ("   ", "empty pin"),
    ],
)
def test_parse_rejects(text: str, expected: str) -> None:
    with pytest.raises(PinFormatError) as info:
        Pin.parse(text)
    message = str(info.value)
    assert expected in message
    if text.strip():
        assert repr(text) in message  # the offending value is quoted back


@pytest.mark.parametrize("text", ["sha256/%%%", "nonsense", "sha3/" + B64])
def test_parse_errors_say_what_is_expected(text: str) -> None:
    with pytest.raises(PinFormatError, match=r"expected 'sha256/<base64 SPKI digest>'"):
        Pin.parse(text)


@pytest.mark.parametrize("value", [None, 42, b"sha256/" + B64.encode(), ["sha256/" + B64]])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(PinFormatError, match="pin must be a string") as info:
        Pin.parse(value)  # type: ignore[arg-type]
    assert type(value).__name__ in str(info.value)


def test_pin_format_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        Pin.parse("sha1/" + b64(20))


# -- constructing directly -------------------------------------------------------------------------


def test_constructor_validates() -> None:
    with pytest.raises(PinFormatError, match="unsupported pin algorithm 'md5'"):
        Pin(bytes(16), "md5")
    with pytest.raises(PinFormatError, match="a sha256 digest has 32 bytes, got 31"):
        Pin(bytes(31))
    with pytest.raises(PinFormatError, match="a sha512 digest has 64 bytes, got 32"):
        Pin(bytes(32), "sha512")


def test_pin_is_immutable_and_hashable() -> None:
    with pytest.raises(AttributeError):
        SPKI_PIN.digest = bytes(32)  # type: ignore[misc]
    assert {SPKI_PIN, Pin.parse(f"sha256/{B64}"), CERT_PIN} == {SPKI_PIN, CERT_PIN}


def test_presentation() -> None:
    assert SPKI_PIN.base64 == B64
    assert SPKI_PIN.hex == ":".join(f"{b:02X}" for b in DIGEST)
    assert repr(SPKI_PIN) == f"Pin('sha256/{B64}')"
    assert repr(CERT_PIN) == f"Pin('cert-sha256/{B64}')"
    assert Pin.parse(SPKI_PIN.hex) == CERT_PIN  # hex text always means a certificate fingerprint


# -- properties ------------------------------------------------------------------------------------


@st.composite
def pins(draw: st.DrawFn) -> Pin:
    alg = draw(st.sampled_from(sorted(DIGEST_SIZES)))
    digest = draw(st.binary(min_size=DIGEST_SIZES[alg], max_size=DIGEST_SIZES[alg]))
    return Pin(digest, alg, draw(st.sampled_from(PinKind)))


@given(pins())
def test_round_trip(pin: Pin) -> None:
    assert Pin.parse(str(pin)) == pin
    prefix = "cert-" if pin.kind is PinKind.CERTIFICATE else ""
    assert Pin.parse(f"{prefix}{pin.algorithm}//{pin.base64}") == pin  # curl's spelling
    if pin.kind is PinKind.SPKI:
        assert Pin.parse(f'pin-{pin.algorithm}="{pin.base64}"') == pin
    else:
        assert Pin.parse(pin.hex) == pin


@given(st.text())
def test_parse_raises_only_pin_format_error(text: str) -> None:
    try:
        pin = Pin.parse(text)
    except PinFormatError:
        return
    assert isinstance(pin, Pin)
    assert Pin.parse(str(pin)) == pin


@given(st.text(alphabet="0123456789abcdefABCDEF: \n\t=/-shaSHAFingerprint", max_size=140))
def test_parse_hex_like_text_raises_only_pin_format_error(text: str) -> None:
    try:
        pin = Pin.parse(text)
    except PinFormatError:
        return
    assert len(pin.digest) == DIGEST_SIZES[pin.algorithm]


# -- computing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_chromium_2016_vectors(name: str) -> None:
    label, der = pem_der(VECTORS / f"{name}.pem")
    expected = Pin.parse(EXPECTED[name])
    if label == "PUBLIC KEY":
        assert Pin.for_spki(der) == expected
    else:
        assert label == "CERTIFICATE"
        pin = Pin.for_certificate(der)
        assert pin == expected
        assert pin.matches(der)
        assert Pin.certificate_fingerprint(der) == Pin(
            hashlib.sha256(der).digest(), kind=PinKind.CERTIFICATE
        )


def test_all_69_vectors_are_present() -> None:
    assert len(EXPECTED) == 69
    assert {p.stem for p in VECTORS.glob("*.pem")} == set(EXPECTED)


@pytest.mark.parametrize("key", KEY_TYPES)
def test_for_certificate_is_sha256_of_spki(key: str) -> None:
    root = new_root("pin test", key=key)  # type: ignore[arg-type]
    der = root.der()
    pin = Pin.for_certificate(der)
    assert str(pin) == spki_pin(root)  # independent computation via cryptography
    assert pin == Pin.for_spki(spki_der(root))
    assert pin.kind is PinKind.SPKI


@pytest.mark.parametrize("alg", ["sha384", "sha512"])
def test_for_certificate_other_algorithms(alg: str) -> None:
    root = new_root("pin alg test")
    pin = Pin.for_certificate(root.der(), alg)
    assert pin.digest == hashlib.new(alg, spki_der(root)).digest()
    assert pin.matches(root.der())
    fingerprint = Pin.certificate_fingerprint(root.der(), alg)
    assert fingerprint.digest == hashlib.new(alg, root.der()).digest()
    assert fingerprint.matches(root.der())


def test_certificate_fingerprint() -> None:
    root = new_root("fingerprint test")
    pin = Pin.certificate_fingerprint(root.der())
    assert pin.kind is PinKind.CERTIFICATE
    assert pin.digest.hex() == cert_sha256(root)
    assert str(pin).startswith("cert-sha256/")
    openssl_style = "SHA256 Fingerprint=" + pin.hex
    assert Pin.parse(openssl_style) == pin


def test_matches_spki_pin_survives_reissue() -> None:
    pki = make_pki(("a.example",))
    again = pki.leaf.reissue()
    spki = Pin.for_certificate(pki.leaf.der())
    assert spki.matches(pki.leaf.der())
    assert spki.matches(again.der())  # same key, new certificate
    assert not spki.matches(pki.intermediate.der())


def test_matches_certificate_pin_is_exact() -> None:
    pki = make_pki(("a.example",))
    again = pki.leaf.reissue()
    cert = Pin.certificate_fingerprint(pki.leaf.der())
    assert cert.matches(pki.leaf.der())
    assert not cert.matches(again.der())  # re-issue changes the certificate pin
    assert not cert.matches(pki.intermediate.der())
    # A certificate pin hashes raw bytes: it never needs to parse them.
    assert Pin.certificate_fingerprint(b"opaque").matches(b"opaque")


def test_matches_garbage_raises_value_error_for_spki_pins() -> None:
    with pytest.raises(ValueError):
        SPKI_PIN.matches(b"not a certificate")
    assert not CERT_PIN.matches(b"not a certificate")


def test_spki_pin_of_reencoded_key_equals_certificate_spki() -> None:
    root = new_root("reencode", key="rsa2048")
    key_der = root.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert Pin.for_spki(key_der) == Pin.for_certificate(root.der())
    loaded = x509.load_der_x509_certificate(root.der())
    assert Pin.for_certificate(loaded.public_bytes(serialization.Encoding.DER)).matches(root.der())


def test_a_plain_kind_string_becomes_the_enum() -> None:
    pin = Pin(b"\x01" * 32, "sha256", "certificate")  # type: ignore[arg-type]
    assert pin.kind is PinKind.CERTIFICATE and pin == Pin(
        b"\x01" * 32, "sha256", PinKind.CERTIFICATE
    )
    with pytest.raises(ValueError):
        Pin(b"\x01" * 32, "sha256", "spkey")  # type: ignore[arg-type]
