"""Pin values: parse, format and compute.

A `Pin` is a digest of either a SubjectPublicKeyInfo (the default, RFC 7469 / OkHttp / Android NSC /
Apple ATS) or of a whole DER certificate (an explicit, distinct kind: it changes on every
re-issue, so it only suits leaf pinning with a short-lived deployment).

Canonical text forms:
    ``sha256/<base64>``        SPKI SHA-256 (also sha384/, sha512/)
    ``cert-sha256/<base64>``   certificate SHA-256 (also cert-sha384/, cert-sha512/)

`Pin.parse` also accepts ``pin-sha256="<b64>"`` (HPKP), ``sha256//<b64>`` (curl) and colon/plain hex
certificate fingerprints as printed by ``openssl x509 -fingerprint -sha256``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from certpin._errors import PinFormatError
from certpin.core.der import DERError, read_tlv, spki_from_tbs_certificate
from certpin.core.toml import shown

__all__ = [
    "Pin",
    "PinKind",
    "spki_of_certificate",
]

#: digest name -> digest length in bytes. SHA-1 and MD5 are refused on purpose (collisions).
DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_WEAK = {"sha1": "SHA-1", "sha-1": "SHA-1", "md5": "MD5"}
_HEX_SIZES = {64: "sha256", 96: "sha384", 128: "sha512"}
_WEAK_HEX = {40: "SHA-1", 32: "MD5"}


class PinKind(StrEnum):
    """What a pin's digest covers."""

    SPKI = "spki"
    """The certificate's SubjectPublicKeyInfo: survives re-issue with the same key."""
    CERTIFICATE = "certificate"
    """The whole DER certificate: changes on every re-issue."""


@dataclass(frozen=True, slots=True)
class Pin:
    """An immutable pin: a digest, its algorithm and what it covers.

    Pins compare by value; ``str(pin)`` is the canonical form and `Pin.parse` reads it back.
    """

    digest: bytes
    algorithm: str = "sha256"
    kind: PinKind = PinKind.SPKI

    def __post_init__(self) -> None:
        # Coerce a plain "spki"/"certificate": the digest cache is keyed by kind, and a str
        # that merely compares equal to the enum must not select the wrong digest.
        if type(self.kind) is not PinKind:
            object.__setattr__(self, "kind", PinKind(self.kind))
        size = DIGEST_SIZES.get(self.algorithm)
        if size is None:
            raise PinFormatError(
                f"unsupported pin algorithm {self.algorithm!r}: "
                "expected one of sha256, sha384, sha512"
            )
        if len(self.digest) != size:
            raise PinFormatError(
                f"a {self.algorithm} digest has {size} bytes, got {len(self.digest)}"
            )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Pin:
        """Parse any accepted pin notation; raises `PinFormatError` naming the value."""
        if type(text) is str:
            return _parse_cached(text)
        return _parse(text)

    @classmethod
    def for_spki(cls, spki_der: bytes, algorithm: str = "sha256") -> Pin:
        """The pin of DER SubjectPublicKeyInfo bytes (hashed as given, never re-encoded)."""
        return cls(hashlib.new(algorithm, spki_der).digest(), algorithm, PinKind.SPKI)

    @classmethod
    def for_certificate(cls, cert_der: bytes, algorithm: str = "sha256") -> Pin:
        """The SPKI pin of a DER certificate (RFC 7469 §2.4: the SPKI as encoded in it)."""
        return cls(_digest(cert_der, algorithm, PinKind.SPKI), algorithm, PinKind.SPKI)

    @classmethod
    def certificate_fingerprint(cls, cert_der: bytes, algorithm: str = "sha256") -> Pin:
        """A certificate pin: the digest of the whole DER certificate."""
        return cls(hashlib.new(algorithm, cert_der).digest(), algorithm, PinKind.CERTIFICATE)

    # -- presentation -------------------------------------------------------------------------

    @property
    def base64(self) -> str:
        return base64.b64encode(self.digest).decode("ascii")

    @property
    def hex(self) -> str:
        """Colon-separated upper-case hex, as ``openssl x509 -fingerprint`` prints it."""
        return ":".join(f"{b:02X}" for b in self.digest)

    def __str__(self) -> str:
        prefix = "cert-" if self.kind is PinKind.CERTIFICATE else ""
        return f"{prefix}{self.algorithm}/{self.base64}"

    def __repr__(self) -> str:
        return f"Pin({str(self)!r})"

    def matches(self, cert_der: bytes) -> bool:
        """True when this pin names the DER certificate `cert_der`: the digest of its
        SubjectPublicKeyInfo as encoded in it (an SPKI pin) or of the whole certificate (a
        certificate pin). Constant-time comparison.

        `certpin.verdict` applies a rule's pins to a verified chain with it; the lifecycle
        tools ask it which certificate of a chain a pin names.

        Raises:
            ValueError: `cert_der` is not a DER certificate (an SPKI pin must find its SPKI).
        """
        return hmac.compare_digest(self.digest, _digest(cert_der, self.algorithm, self.kind))

    def matches_spki(self, spki_der: bytes) -> bool:
        """True when this is the SPKI pin of the key whose SubjectPublicKeyInfo is `spki_der`
        (a bare key or a CSR's key: no certificate to match). A certificate pin names no bare
        key. Constant-time comparison."""
        if self.kind is not PinKind.SPKI:
            return False
        return hmac.compare_digest(self.digest, hashlib.new(self.algorithm, spki_der).digest())


# -- computing ----------------------------------------------------------------------------------


def spki_of_certificate(cert_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo bytes exactly as encoded in a DER certificate.

    Raises:
        ValueError: when the bytes are not a DER certificate.
    """
    tag, pos, end = read_tlv(cert_der, 0)
    if tag != 0x30 or end != len(cert_der):
        raise DERError("a certificate is a single DER SEQUENCE")
    _tbs_tag, _tbs_content, tbs_end = read_tlv(cert_der, pos)
    return spki_from_tbs_certificate(cert_der[pos:tbs_end])


@lru_cache(maxsize=4096)
def _digest(cert_der: bytes, algorithm: str, kind: PinKind) -> bytes:
    # Cached by certificate DER: the same intermediates and roots recur on every handshake, and
    # the handshake hook must stay a few microseconds (DESIGN.md: ~9 µs cached vs ~76 µs not).
    data = spki_of_certificate(cert_der) if kind is PinKind.SPKI else cert_der
    return hashlib.new(algorithm, data).digest()


# -- parsing ------------------------------------------------------------------------------------

# Possessive quantifiers (*+, ++): "\s*(?:fingerprint)?\s*" and "\s*(?P<q>"?)[^"]*" could each
# split one run of spaces many ways, and a long run that then failed to match was retried at
# every split: time quadratic in the pin's length (16 000 spaces: a second). Each run is read
# once now; the texts accepted are the same.
_PREFIXED = re.compile(
    r"""^(?P<cert>cert-)?(?P<alg>[A-Za-z0-9-]+)(?P<sep>//|/)(?P<value>.*)$""", re.DOTALL
)
_HPKP = re.compile(r"""^pin-(?P<alg>[A-Za-z0-9-]++)\s*+=\s*+(?P<q>"?)(?P<value>[^"]*+)(?P=q)$""")
_HEX_PREFIX = re.compile(
    r"^(?:(?P<alg>sha-?\d++|md5)\s*+(?:fingerprint\s*+)?[=:]\s*+)", re.IGNORECASE
)
#: the longest pin text `Pin.parse` reads. The longest notation, a colon-separated SHA-512
#: fingerprint with its "SHA512 Fingerprint=" prefix, has 210 characters.
MAX_PIN_LENGTH = 512
# \Z, not $: "$" also matches before a trailing newline, which bytes.fromhex then rejects.
_HEX = re.compile(r"^[0-9A-Fa-f]+\Z")

_EXPECTED = (
    "expected 'sha256/<base64 SPKI digest>' (also sha384/, sha512/, curl's sha256//, HPKP's "
    'pin-sha256="…") or a hex certificate fingerprint'
)


@lru_cache(maxsize=65536)
def _parse_cached(text: str) -> Pin:
    # Cached by text: a bundle repeats its CA and backup pins across domains, and every refresh
    # re-delivers the same pins. Errors are not cached (lru_cache never caches a raise).
    return _parse(text)


def _parse(text: str) -> Pin:
    if not isinstance(text, str):
        raise PinFormatError(f"pin must be a string, got {type(text).__name__}: {shown(text)}")
    if len(text) > MAX_PIN_LENGTH:
        raise PinFormatError(
            f"pin {text[:40]!r}... is {len(text)} characters long; a pin has at most "
            f"{MAX_PIN_LENGTH}: {_EXPECTED}"
        )
    value = text.strip()
    if not value:
        raise PinFormatError(f"empty pin: {_EXPECTED}")
    m = _PREFIXED.match(value)  # the canonical notation first: what nearly every pin is
    if m:
        cert, alg, sep, b64 = m.groups()
        # A base64 digest may itself start with "/" (first byte >= 0xFC), so "sha256//…" is
        # either curl's separator or sha256/ followed by "/…". Canonical base64 of a digest has a
        # fixed length, so at most one reading has the right length: prefer it.
        if sep == "//" and len(b64) + 1 == _b64_length(alg):
            b64 = "/" + b64
        return _from_b64(text, alg, b64, PinKind.CERTIFICATE if cert else PinKind.SPKI)
    m = _HPKP.match(value)
    if m:
        return _from_b64(text, m["alg"], m["value"], PinKind.SPKI)
    return _from_hex(text, value)


def _b64_length(alg: str) -> int:
    size = DIGEST_SIZES.get(alg.lower().replace("-", ""), 0)
    return 4 * ((size + 2) // 3)


def _algorithm(text: str, alg: str) -> str:
    name = alg.lower()
    if name in DIGEST_SIZES:
        return name
    if name in _WEAK:
        raise PinFormatError(
            f"pin {text!r} uses {_WEAK[name]}, which is not accepted (collisions are practical); "
            "use a sha256/ pin"
        )
    if name.replace("-", "") in DIGEST_SIZES:
        return name.replace("-", "")
    raise PinFormatError(f"pin {text!r} has unknown algorithm {alg!r}: {_EXPECTED}")


def _from_b64(text: str, alg: str, value: str, kind: PinKind) -> Pin:
    algorithm = _algorithm(text, alg)
    try:
        # strict: only the alphabet, "=" only at the end (binascii.Error), ASCII (ValueError)
        digest = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise PinFormatError(f"pin {text!r} is not valid base64: {_EXPECTED}") from None
    # Non-canonical base64 (stray bits in the last character) would make two spellings of one
    # pin; refuse it so a pin string has exactly one meaning.
    if binascii.b2a_base64(digest, newline=False) != value.encode("ascii"):
        raise PinFormatError(f"pin {text!r} is not canonical base64 (check padding and last char)")
    size = DIGEST_SIZES[algorithm]
    if len(digest) != size:
        raise PinFormatError(
            f"pin {text!r} decodes to {len(digest)} bytes, but a {algorithm} digest has {size}"
        )
    return Pin(digest, algorithm, kind)


def _from_hex(text: str, value: str) -> Pin:
    m = _HEX_PREFIX.match(value)
    named = None
    if m:
        named = _algorithm(text, m["alg"])
        value = value[m.end() :]
    compact = value.replace(":", "").replace(" ", "")
    if not compact or not _HEX.match(compact):
        raise PinFormatError(f"cannot parse pin {text!r}: {_EXPECTED}")
    if len(compact) in _WEAK_HEX:
        raise PinFormatError(
            f"pin {text!r} looks like a {_WEAK_HEX[len(compact)]} fingerprint "
            f"({len(compact) // 2} bytes), which is not accepted; use a SHA-256 fingerprint"
        )
    algorithm = _HEX_SIZES.get(len(compact))
    if algorithm is None or (named is not None and named != algorithm):
        raise PinFormatError(
            f"pin {text!r} has {len(compact) // 2} bytes of hex; a certificate fingerprint has "
            "32 (SHA-256), 48 (SHA-384) or 64 (SHA-512)"
        )
    return Pin(bytes.fromhex(compact), algorithm, PinKind.CERTIFICATE)
