"""Reading pin sources (certificates, public keys, private keys, CSRs) from files and bytes.

A file may hold any number of PEM blocks, or be one DER object. Every usable object becomes a
`PinSource` carrying its SPKI pin.

RFC 7469 §2.4 pins the SubjectPublicKeyInfo *as encoded*: re-encoding a loaded key can change the
bytes for legal but unusual encodings (an RSA AlgorithmIdentifier without NULL parameters,
explicit EC parameters), and Chromium, OkHttp and curl hash the original bytes. So certificates,
``PUBLIC KEY`` blocks and CSRs are hashed from their own bytes; only private keys and PKCS#1
``RSA PUBLIC KEY`` blocks, which contain no SPKI, are re-encoded by ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.utils import CryptographyDeprecationWarning

from certpin._errors import CertificateLoadError
from certpin.core.der import DERError, read_tlv, spki_from_csr_info
from certpin.core.pins import Pin, spki_of_certificate

__all__ = [
    "MAX_FILE_SIZE",
    "PinSource",
    "SourceKind",
    "load_file",
    "load_sources",
    "subject_alt_names",
]

#: the largest certificate/key/CSR file `load_file` reads (a system CA bundle is ~250 KiB).
MAX_FILE_SIZE = 16 * 1024 * 1024

_T = TypeVar("_T")

SourceKind = Literal["certificate", "public-key", "private-key", "csr"]

_NEEDS_PASSWORD = (
    "the private key is encrypted and no password was given: pass one with --password-file FILE "
    "or --password-env VAR (password= in the API)"
)

_CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE"})
_SPKI_LABELS = frozenset({"PUBLIC KEY"})
_PKCS1_LABELS = frozenset({"RSA PUBLIC KEY"})
_KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)
_CSR_LABELS = frozenset({"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"})

_BEGIN = re.compile(rb"-----BEGIN ([^\r\n-]*)-----")
_DER_KINDS = "a certificate, SubjectPublicKeyInfo, CSR or PKCS#8/traditional private key"
_PEM_KINDS = (
    "CERTIFICATE, PUBLIC KEY, RSA PUBLIC KEY, PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY, "
    "ENCRYPTED PRIVATE KEY or CERTIFICATE REQUEST"
)


@dataclass(frozen=True)
class PinSource:
    """One certificate, public key, private key or CSR read from a file, with its pins.

    Attributes:
        kind: ``"certificate"``, ``"public-key"``, ``"private-key"`` or ``"csr"``.
        source: the file name (or the ``source`` given to `load_sources`).
        position: index among the objects read from that source, 0-based.
        subject: RFC 4514 subject (certificates and CSRs), else None.
        issuer: RFC 4514 issuer (certificates), else None.
        not_before, not_after: validity (aware UTC datetimes; certificates), else None.
        pin: the SPKI SHA-256 pin.
        cert_sha256: the certificate SHA-256 pin (kind CERTIFICATE) for certificates, else None.
        key_type: e.g. ``"RSA 2048"``, ``"EC P-256"``, ``"Ed25519"``.
        is_ca: the certificate's BasicConstraints cA flag; None when there is no such
            extension (old v1 roots) or the object is not a certificate.
        line: 1-based line of the PEM ``BEGIN`` line, or None for DER input.
        der: the DER object read (certificate, SubjectPublicKeyInfo, CSR). For a private key
            this is its SubjectPublicKeyInfo: the secret is never kept.
        spki: the SubjectPublicKeyInfo bytes that `pin` hashes.
    """

    kind: SourceKind
    source: str
    position: int
    subject: str | None
    issuer: str | None
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    pin: Pin
    cert_sha256: Pin | None
    key_type: str
    is_ca: bool | None
    der: bytes = field(repr=False)
    spki: bytes = field(repr=False)
    line: int | None = None

    def pin_for(self, algorithm: str) -> Pin:
        """The SPKI pin with another digest (``"sha256"``, ``"sha384"``, ``"sha512"``)."""
        return Pin.for_spki(self.spki, algorithm)


def load_file(path: str | PathLike[str], password: bytes | None = None) -> list[PinSource]:
    """Read every certificate, key and CSR of a PEM or DER file.

    Args:
        path: the file.
        password: the passphrase of encrypted private keys in it (None: no password).

    Raises:
        CertificateLoadError: the file cannot be read, is larger than `MAX_FILE_SIZE`, or
            holds nothing usable; the message names the file and the PEM block's line.
    """
    name = str(path)
    try:
        with Path(path).open("rb") as file:
            # Never more than the cap in memory, whatever the file is (a log, /dev/zero).
            data = file.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise CertificateLoadError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_SIZE:
        raise CertificateLoadError(
            f"{name}: the file is larger than the {MAX_FILE_SIZE // 2**20} MiB "
            f"({MAX_FILE_SIZE} bytes) limit for certificate, key and CSR files"
        )
    return load_sources(data, source=name, password=password)


def load_sources(data: bytes, *, source: str, password: bytes | None = None) -> list[PinSource]:
    """Read every certificate, key and CSR from PEM text or a single DER object.

    PEM blocks of other types (``EC PARAMETERS``, ``DH PARAMETERS``…) are skipped as long as at
    least one usable block is present.

    Args:
        data: the file content.
        source: the name used in `PinSource.source` and in error messages.
        password: the passphrase of encrypted private keys (None: no password).

    Raises:
        CertificateLoadError: nothing usable, or a block that does not parse; the message names
            the source, the line and what was expected.
    """
    # Legacy certificates (a non-positive serial number, as in some 2016 Chromium vectors) make
    # cryptography warn; we only hash them, so the warning is noise here.
    with warnings.catch_warnings():
        # Only the legacy-serial warnings: any other deprecation (e.g. an API certpin itself
        # uses) must still surface, and fail the tests.
        warnings.filterwarnings(
            "ignore",
            r"Parsed a (negative|serial number which wasn't positive)",
            CryptographyDeprecationWarning,
        )
        if not data.strip():
            raise CertificateLoadError(
                f"{source}, line 1: the file is empty; expected PEM ({_PEM_KINDS}) or DER"
            )
        if _BEGIN.search(data):
            return _load_pem(data, source, password)
        return [_load_der(data, source, password)]


# -- PEM --------------------------------------------------------------------------------------


def _load_pem(data: bytes, source: str, password: bytes | None) -> list[PinSource]:
    found: list[PinSource] = []
    skipped: list[str] = []
    for label, line, block, der in _pem_blocks(data, source):
        where = f"{source}, line {line}"
        if label in _CERT_LABELS:
            found.append(_certificate(der, source, len(found), line, where))
        elif label in _SPKI_LABELS:
            found.append(_public_key(der, source, len(found), line, where))
        elif label in _PKCS1_LABELS:
            key = _parse(
                where, "an RSA PUBLIC KEY (PKCS#1)", serialization.load_der_public_key, der
            )
            found.append(_from_key(key, "public-key", source, len(found), line))
        elif label in _CSR_LABELS:
            found.append(_csr(der, source, len(found), line, where))
        elif label in _KEY_LABELS:
            encrypted = label == "ENCRYPTED PRIVATE KEY" or b"ENCRYPTED" in block.split(b"\n\n")[0]
            found.append(_private_key(block, True, encrypted, password, source, len(found), line))
        else:
            skipped.append(f"{_shown_label(label)} (line {line})")
    if not found:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise CertificateLoadError(
            f"{source}, line {_first_line(data)}: no usable PEM block "
            f"(found {', '.join(skipped[:5])}{more}); expected {_PEM_KINDS}"
        )
    return found


def subject_alt_names(der: bytes) -> tuple[list[str], list[str]]:
    """The DNS names and the IP addresses (as text) of a DER certificate's SubjectAltName
    extension, in order; two empty lists without the extension.

    Raises:
        ValueError: `der` is not a certificate, or its extensions do not parse.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [name.value for name in san if isinstance(name, x509.DNSName)]
    ips = [str(name.value) for name in san if isinstance(name, x509.IPAddress)]
    return dns, ips


def _shown_label(label: str) -> str:
    """A PEM label for messages: a BEGIN line may be as long as the file."""
    return label if len(label) <= 60 else label[:57] + "..."


def _pem_blocks(data: bytes, source: str) -> list[tuple[str, int, bytes, bytes]]:
    """(label, BEGIN line, whole block bytes, decoded DER) of each PEM block, in order."""
    blocks = []
    pos = 0
    # Lines are counted from the previous block on, not from the start: counting from the
    # start for every block took time quadratic in the file (40 000 blocks: 20 s).
    line, counted = 1, 0
    while (m := _BEGIN.search(data, pos)) is not None:
        label = m[1].decode("ascii", "replace").strip()
        line += data.count(b"\n", counted, m.start())
        counted = m.start()
        end_marker = b"-----END " + m[1] + b"-----"
        end = data.find(end_marker, m.end())
        next_begin = _BEGIN.search(data, m.end())
        if end == -1 or (next_begin is not None and next_begin.start() < end):
            shown = _shown_label(label)
            raise CertificateLoadError(
                f"{source}, line {line}: truncated {shown} block: expected "
                f"'-----END {shown}-----' before "
                + ("the next BEGIN line" if end != -1 else "the end of the file")
            )
        block = data[m.start() : end + len(end_marker)]
        body = data[m.end() : end]
        blocks.append((label, line, block, _pem_body(body, label, source, line)))
        pos = end + len(end_marker)
    return blocks


def _pem_body(body: bytes, label: str, source: str, line: int) -> bytes:
    lines = [ln.strip() for ln in body.splitlines()]
    # RFC 1421 headers (Proc-Type, DEK-Info) of traditional encrypted keys come first.
    b64 = b"".join(ln for ln in lines if ln and b":" not in ln)
    try:
        der = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateLoadError(
            f"{source}, line {line}: the {_shown_label(label)} block is not valid base64"
        ) from None
    if not der:
        raise CertificateLoadError(
            f"{source}, line {line}: the {_shown_label(label)} block is empty"
        )
    return der


def _first_line(data: bytes) -> int:
    m = _BEGIN.search(data)
    return 1 if m is None else data.count(b"\n", 0, m.start()) + 1


# -- DER --------------------------------------------------------------------------------------


def _load_der(data: bytes, source: str, password: bytes | None) -> PinSource:
    where = f"{source}, line 1"
    shape = _der_shape(data)
    if shape is None:
        raise CertificateLoadError(
            f"{where}: neither PEM (no '-----BEGIN' line) nor DER; expected PEM "
            f"({_PEM_KINDS}) or DER ({_DER_KINDS})"
        )
    attempts: list[Callable[[], PinSource]] = [
        lambda: _certificate(data, source, 0, None, where),
        lambda: _csr(data, source, 0, None, where),
    ]
    if shape == "spki":
        attempts.insert(0, lambda: _public_key(data, source, 0, None, where))
    for attempt in attempts:
        try:
            return attempt()
        except CertificateLoadError:
            continue
    try:
        return _private_key(data, False, None, password, source, 0, None)
    except CertificateLoadError as exc:
        if "password" in str(exc):
            raise
    raise CertificateLoadError(f"{where}: not PEM, and the DER is not {_DER_KINDS}")


def _der_shape(data: bytes) -> str | None:
    """``"spki"`` for SEQUENCE{SEQUENCE, BIT STRING}, ``"sequence"`` for another single
    SEQUENCE, None when the bytes are not one DER SEQUENCE."""
    try:
        tag, pos, end = read_tlv(data, 0)
        if tag != 0x30 or end != len(data):
            return None
        first_tag, _, first_end = read_tlv(data, pos)
        second_tag, _, second_end = read_tlv(data, first_end)
    except DERError:
        return None
    if first_tag == 0x30 and second_tag == 0x03 and second_end == end:
        return "spki"
    return "sequence"


# -- one object -------------------------------------------------------------------------------


def _parse(where: str, what: str, loader: Callable[[bytes], _T], der: bytes) -> _T:
    try:
        return loader(der)
    except (ValueError, TypeError) as exc:
        raise CertificateLoadError(f"{where}: not a valid {what} ({exc})") from None


def _certificate(der: bytes, source: str, position: int, line: int | None, where: str) -> PinSource:
    cert = _parse(where, "X.509 certificate", x509.load_der_x509_certificate, der)
    # cryptography parses a certificate's fields lazily: a malformed subject, validity or
    # extension only raises when read, so every read is inside the one conversion to our error.
    try:
        return PinSource(
            kind="certificate",
            source=source,
            position=position,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            # RFC 7469 §2.4: the SPKI exactly as encoded in the certificate.
            pin=Pin.for_certificate(der),
            cert_sha256=Pin.certificate_fingerprint(der),
            key_type=_key_type_of(cert.public_key),
            is_ca=_is_ca(cert),
            der=der,
            spki=spki_of_certificate(der),
            line=line,
        )
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise CertificateLoadError(f"{where}: not a valid X.509 certificate ({exc})") from None


def _public_key(der: bytes, source: str, position: int, line: int | None, where: str) -> PinSource:
    if _der_shape(der) != "spki":
        raise CertificateLoadError(
            f"{where}: not a valid SubjectPublicKeyInfo (expected SEQUENCE {{algorithm, "
            "BIT STRING}}; a PKCS#1 key belongs in an 'RSA PUBLIC KEY' block)"
        )
    key = _parse(where, "SubjectPublicKeyInfo", serialization.load_der_public_key, der)
    # Hashed as given, never re-encoded (RFC 7469 §2.4; see the module docstring).
    return _key_source(der, key, "public-key", source, position, line)


def _csr(der: bytes, source: str, position: int, line: int | None, where: str) -> PinSource:
    csr = _parse(where, "certificate request (PKCS#10)", x509.load_der_x509_csr, der)
    try:
        spki = spki_from_csr_info(csr.tbs_certrequest_bytes)
    except ValueError as exc:
        raise CertificateLoadError(f"{where}: not a valid certificate request ({exc})") from None
    return PinSource(
        kind="csr",
        source=source,
        position=position,
        subject=csr.subject.rfc4514_string(),
        issuer=None,
        not_before=None,
        not_after=None,
        pin=Pin.for_spki(spki),
        cert_sha256=None,
        key_type=_key_type_of(csr.public_key),
        is_ca=None,
        der=der,
        spki=spki,
        line=line,
    )


def _private_key(
    data: bytes,
    pem: bool,
    encrypted: bool | None,
    password: bytes | None,
    source: str,
    position: int,
    line: int | None,
) -> PinSource:
    """`encrypted` None = unknown (DER): cryptography tells us when it needs a password."""
    where = f"{source}, line {line or 1}"
    load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    if encrypted is None:
        try:
            key = load(data, None)
        except TypeError:  # "Password was not given but private key is encrypted"
            encrypted = True
        except Exception as exc:
            raise CertificateLoadError(f"{where}: not a valid private key ({exc})") from None
        else:
            return _from_key(key.public_key(), "private-key", source, position, line)
    if encrypted and password is None:
        raise CertificateLoadError(f"{where}: {_NEEDS_PASSWORD}")
    # Only encrypted keys get the password: one file may mix encrypted and plain keys, and
    # cryptography refuses a password for a plain key.
    try:
        key = load(data, password if encrypted else None)
    except ValueError as exc:
        problem = "cannot decrypt the private key (wrong password?)"
        if not encrypted:
            problem = "not a valid private key"
        raise CertificateLoadError(f"{where}: {problem}: {exc}") from None
    except Exception as exc:  # TypeError, UnsupportedAlgorithm
        raise CertificateLoadError(f"{where}: not a usable private key ({exc})") from None
    return _from_key(key.public_key(), "private-key", source, position, line)


def _from_key(
    key: object, kind: SourceKind, source: str, position: int, line: int | None
) -> PinSource:
    # No SPKI exists in the input (private key, PKCS#1): re-encoding is the only option.
    spki = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _key_source(spki, key, kind, source, position, line)


def _key_source(
    spki: bytes, key: object, kind: SourceKind, source: str, position: int, line: int | None
) -> PinSource:
    """A bare key (no certificate): its SPKI pin and key type, nothing else known."""
    return PinSource(
        kind=kind,
        source=source,
        position=position,
        subject=None,
        issuer=None,
        not_before=None,
        not_after=None,
        pin=Pin.for_spki(spki),
        cert_sha256=None,
        key_type=_key_type(key),
        is_ca=None,
        der=spki,
        spki=spki,
        line=line,
    )


# -- descriptions -----------------------------------------------------------------------------

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _key_type_of(get_key: Callable[[], object]) -> str:
    try:
        return _key_type(get_key())
    except Exception:  # Defensive: an unsupported algorithm must not stop pin computation
        return "unknown"


def _key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {_CURVE_NAMES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, x25519.X25519PublicKey):
        return "X25519"
    if isinstance(key, x448.X448PublicKey):
        return "X448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def _is_ca(cert: x509.Certificate) -> bool | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # Defensive: malformed or duplicate extensions in legacy certificates
        return None
