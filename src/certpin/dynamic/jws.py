"""A deliberately small JWS (RFC 7515) compact-serialization signer and verifier.

Only what pin bundles need, built on `cryptography` alone:

* algorithms ``ES256`` (ECDSA P-256 + SHA-256, signature = raw ``r || s``, 64 bytes, RFC 7518
  §3.4 — *not* DER) and ``Ed25519`` (RFC 9864's fully specified name). One algorithm per key.
* The polymorphic ``EdDSA`` name is **rejected**: RFC 9864 deprecates it, and accepting it would
  mean two names for one key. ``none`` and every ``HS*`` (HMAC) are rejected before any key is
  looked at, so "HS256 with the public key as the secret" can never verify.
* ``kid`` is the RFC 7638 JWK thumbprint of the public key; the verifier looks the key up by
  ``kid`` and the key's own algorithm must equal the header's.
* ``crit`` (RFC 7515 §4.1.11): certpin understands no extension, so any ``crit`` is rejected.
* base64url must be canonical: no padding, only the URL-safe alphabet, and re-encoding the
  decoded bytes gives the same text. The last character of a segment carries unused bits; a
  lenient decoder would let a flipped bit there still verify.
* Duplicate JSON member names are rejected (RFC 7515 §4: "MUST reject … or use a JSON parser
  that returns only the lexically last duplicate" — certpin rejects), and so are ``NaN`` and
  ``Infinity``, which RFC 8259 §6 does not allow.
* ES256 signatures are accepted with a high or a low S (``(r, n - s)`` verifies as well as
  ``(r, s)``; Apple CryptoKit and Android accept both, so refusing one would split clients), and
  certpin's own signer always emits the low one. A signature is therefore not an identity: a
  bundle is identified by its signing input (header and payload), see
  `certpin.dynamic.bundle.Bundle.signed_sha256`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from certpin._errors import CertificateLoadError, CertpinError, ConfigurationError

__all__ = [
    "ALGORITHMS",
    "BundleError",
    "FileSigner",
    "Signer",
    "TrustedKey",
    "b64url_decode",
    "b64url_encode",
    "generate_private_key",
    "load_trusted_keys",
    "sign_compact",
    "verify_compact",
]

Algorithm = Literal["ES256", "Ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "Ed25519")
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class BundleError(CertpinError):
    """A signed bundle (or its JWS envelope) was rejected.

    Attributes:
        reason: a short machine-readable code (``bad_signature``, ``unknown_kid``, ``rollback``…).
        detail: the human explanation (also ``str(error)``).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"bundle rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


# -- base64url -----------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes, what: str = "segment") -> bytes:
    """Strict unpadded base64url: rejects padding, other alphabets, and non-canonical text."""
    if isinstance(text, str):
        if not text.isascii():
            raise BundleError("bad_encoding", f"{what} is not unpadded base64url")
        text = text.encode("ascii")
    rem = len(text) % 4
    if rem == 1 or b"=" in text or b"+" in text or b"/" in text or not text.isascii():
        raise BundleError("bad_encoding", f"{what} is not unpadded base64url")
    try:
        # strict_mode (C, no regex pass over a multi-megabyte payload) refuses any character
        # outside the alphabet, whitespace included.
        data = binascii.a2b_base64(
            text.translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4), strict_mode=True
        )
    except binascii.Error:
        raise BundleError("bad_encoding", f"{what} is not unpadded base64url") from None
    if rem and b64url_encode(data[len(data) - rem + 1 :]).encode("ascii") != text[-rem:]:
        # Non-zero unused bits in the last character: the same bytes have another spelling.
        # Only the final partial group carries unused bits, so only it is re-encoded.
        raise BundleError("bad_encoding", f"{what} is not canonical base64url (unused bits set)")
    return data


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
#: Largest encoded JWS header accepted (real ones are ~150 bytes); it is parsed before the
#: signature is checked, so it must not be able to cost more than a few microseconds.
MAX_HEADER_SIZE = 8 * 1024
#: Deepest nesting of arrays/objects accepted in a JWS header or a DynamicPolicy state file
#: (both are flat: a header is one object, the state two levels). A bundle *payload* is bounded
#: by the JSON parser's own recursion limit instead: a depth pre-scan of a 200 KB payload costs
#: as much as parsing it, the payload is only parsed after its signature verified, and the
#: bundle schema takes no value deeper than 7 levels anyway (see `certpin.dynamic.bundle`).
MAX_JSON_DEPTH = 16
# A JSON string, escapes included ("unrolled loop": no alternation to backtrack into, so
# matching is linear, also for an unterminated string).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_DEPTH_STEP = [0] * 256
for _byte in b"[{":
    _DEPTH_STEP[_byte] = 1
for _byte in b"]}":
    _DEPTH_STEP[_byte] = -1


def json_depth(data: bytes) -> int:
    """The deepest array/object nesting of JSON text, in linear time and without recursion.

    Strings are removed first (a ``[`` inside a string does not nest). Meant for small
    documents: it is a regex pass plus one step per bracket.
    """
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def brief(value: Any, limit: int = 60) -> str:
    """A short, non-recursive description of an untrusted JSON value, for error messages.

    ``repr`` of a deeply nested list recurses (RecursionError) and of a multi-megabyte string
    copies it into the message; neither may happen while rejecting hostile input.
    """
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} ({len(value)} items)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {value.bit_length() * 3 // 10} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _refuse_constant(name: str) -> Any:
    raise BundleError("bad_json", f"{name} is not JSON (RFC 8259 §6)")


def _json_object(data: bytes, what: str, *, max_depth: int | None = None) -> dict[str, Any]:
    """Parse a JSON object; any problem is a `BundleError` (``bad_json``), nothing else.

    Args:
        data: the UTF-8 JSON text.
        what: names the document in messages.
        max_depth: refuse nesting deeper than this (checked before parsing); None leaves the
            bound to the parser's recursion limit (still a ``bad_json`` rejection).
    """

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):  # a name was repeated: say which (error path only)
            counts = Counter(key for key, _value in pairs)
            key = next(k for k, n in counts.items() if n > 1)
            raise BundleError("bad_json", f"{what} repeats the member {brief(key)}")
        return out

    if max_depth is not None and json_depth(data) > max_depth:
        raise BundleError("bad_json", f"{what} is nested deeper than {max_depth} levels")
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=no_duplicates,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers beyond Python's digit limit;
        # RecursionError deeply nested arrays. Neither may escape as anything but a rejection.
        kind = "too deeply nested" if isinstance(exc, RecursionError) else "not UTF-8 JSON"
        raise BundleError("bad_json", f"{what} is {kind}: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise BundleError("bad_json", f"{what} must be a JSON object")
    # A \uD800-\uDFFF escape outside a valid pair decodes to a lone surrogate: a str Python
    # cannot encode, which would raise UnicodeEncodeError wherever it is later hashed (a
    # rollout id), written or logged. Raw UTF-8 cannot carry one (decode refuses it), and
    # certpin signs without escapes, so the costly check runs only for text with such escapes.
    if b"\\u" in data and _SURROGATE_ESCAPE.search(data) is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError):
            raise BundleError(
                "bad_json", f"{what} has a lone surrogate escape (\\uD800-\\uDFFF) in a string"
            ) from None
    return value


def canonical_json(value: Any) -> bytes:
    """Compact, sorted JSON: what certpin signs (any JSON is accepted when verifying)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- keys ----------------------------------------------------------------------------------------


def _alg_of(key: PrivateKey | PublicKey) -> Algorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ConfigurationError(
        f"unsupported key: EC curve {key.curve.name}; bundle keys are P-256 (ES256) or Ed25519"
    )


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK (only the members RFC 7638 §3.2 requires, plus ``alg``)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"alg": "Ed25519", "crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    _alg_of(key)
    numbers = key.public_numbers()
    return {
        "alg": "ES256",
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the required members, sorted, compact."""
    required = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    members = {name: jwk[name] for name in required}
    return b64url_encode(hashlib.sha256(canonical_json(members)).digest())


def key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """A public key from a JWK (P-256 or Ed25519); raises BundleError for anything else."""
    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"], "jwk.x"))
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            x = int.from_bytes(b64url_decode(jwk["x"], "jwk.x"), "big")
            y = int.from_bytes(b64url_decode(jwk["y"], "jwk.y"), "big")
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError("bad_key", f"invalid JWK: {exc}") from None
    raise BundleError("bad_key", "JWK must be an EC P-256 or OKP Ed25519 public key")


@dataclass(frozen=True)
class TrustedKey:
    """A public key the client trusts for bundles, found by its ``kid`` (RFC 7638 thumbprint)."""

    kid: str
    alg: Algorithm
    key: PublicKey

    @classmethod
    def from_public_key(cls, key: PublicKey) -> TrustedKey:
        jwk = public_jwk(key)
        return cls(kid=thumbprint(jwk), alg=_alg_of(key), key=key)

    @classmethod
    def from_pem(cls, pem: bytes | str) -> TrustedKey:
        """The key of one ``PUBLIC KEY`` PEM block (P-256 or Ed25519).

        Raises:
            ConfigurationError: not exactly one public key in PEM, or another key type.
        """
        # The one PEM reader (bounded, linear, errors with line numbers). Imported here: it
        # loads certificate parsing, which a client given TrustedKey objects never needs.
        from certpin.core.sources import load_sources

        data = pem.encode() if isinstance(pem, str) else pem
        try:
            found = load_sources(data, source="the key")
        except CertificateLoadError as exc:
            raise ConfigurationError(f"not a PEM public key: {exc}") from None
        if found[0].line is None:  # load_sources also reads DER
            raise ConfigurationError("not a PEM public key: DER given")
        if len(found) != 1 or found[0].kind != "public-key":
            what = ", ".join(f"a {source.kind}" for source in found)
            raise ConfigurationError(f"not a PEM public key: expected one, found {what}")
        key = serialization.load_der_public_key(found[0].spki)
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise ConfigurationError(
                f"unsupported public key type {type(key).__name__}: use P-256 or Ed25519"
            )
        return cls.from_public_key(key)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustedKey:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read key: {exc.strerror or exc}") from None
        try:
            return cls.from_pem(data)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> TrustedKey:
        return cls.from_public_key(key_from_jwk(jwk))

    def jwk(self) -> dict[str, str]:
        return public_jwk(self.key)

    def verify(self, signature: bytes, data: bytes | memoryview) -> bool:
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, data)
                return True
            if len(signature) != 64:
                return False
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            self.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            return False


def load_trusted_keys(keys: Iterable[TrustedKey | str | Path | bytes]) -> dict[str, TrustedKey]:
    """kid -> key, from TrustedKey objects, PEM bytes, or paths to PEM files."""
    out: dict[str, TrustedKey] = {}
    for item in keys:
        if isinstance(item, TrustedKey):
            key = item
        elif isinstance(item, bytes):
            key = TrustedKey.from_pem(item)
        else:
            key = TrustedKey.from_file(item)
        out[key.kid] = key
    return out


# -- signing -------------------------------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """What signs bundles: a key file, or an HSM/KMS behind the same three members.

    ``sign(data)`` returns the JWS signature bytes for ``alg``: for ES256 the raw 64-byte
    ``r || s`` (RFC 7518 §3.4; convert a KMS's DER signature with `es256_raw`), for Ed25519
    the 64-byte signature.
    """

    @property
    def alg(self) -> str: ...

    @property
    def kid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


#: The order of the P-256 group (FIPS 186-4 §D.1.2.3).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def es256_raw(der_signature: bytes) -> bytes:
    """DER ECDSA signature (what OpenSSL, HSMs and KMSs return) -> JWS ``r || s``, low-S."""
    r, s = decode_dss_signature(der_signature)
    return low_s(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def low_s(raw: bytes) -> bytes:
    """The low-S form of a raw ES256 ``r || s`` signature (other lengths are returned as is).

    ``(r, n - s)`` verifies exactly like ``(r, s)``; OpenSSL returns either at random. Emitting
    only ``s <= n/2`` (as Bitcoin's BIP 62 and libsecp256k1 do) gives every certpin-signed bundle
    one signature, so a copy with the other one can only come from someone re-encoding it.
    """
    if len(raw) != 64:
        return raw
    s = int.from_bytes(raw[32:], "big")
    if s <= P256_ORDER // 2:
        return raw
    return raw[:32] + (P256_ORDER - s).to_bytes(32, "big")


class FileSigner:
    """A `Signer` over a private key held in memory (loaded from a PEM file)."""

    def __init__(self, key: PrivateKey) -> None:
        self._key = key
        self.alg: Algorithm = _alg_of(key)
        self.trusted_key = TrustedKey.from_public_key(key.public_key())
        self.kid: str = self.trusted_key.kid

    @classmethod
    def from_file(cls, path: str | Path, password: bytes | None = None) -> FileSigner:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read key: {exc.strerror or exc}") from None
        try:
            # Not through certpin.core.sources: it reads a private key for its pin and never
            # keeps the secret, which signing needs.
            key = serialization.load_pem_private_key(data, password)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{path}: not a usable PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ConfigurationError(
                f"{path}: unsupported key type {type(key).__name__}: use P-256 or Ed25519"
            )
        try:
            return cls(key)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return es256_raw(self._key.sign(data, ec.ECDSA(hashes.SHA256())))

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_private_key(alg: str = "ES256") -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigurationError(f"unknown algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}")


def sign_compact(payload: bytes, signer: Signer, typ: str) -> str:
    """A JWS compact serialization of `payload` signed by `signer`."""
    if signer.alg not in ALGORITHMS:
        raise ConfigurationError(f"signer algorithm {signer.alg!r} is not one of {ALGORITHMS}")
    header = canonical_json({"alg": signer.alg, "kid": signer.kid, "typ": typ})
    signed = f"{b64url_encode(header)}.{b64url_encode(payload)}"
    signature = signer.sign(signed.encode("ascii"))
    if signer.alg == "ES256":  # whatever the Signer (HSM, KMS) returned: one spelling
        signature = low_s(signature)
    return f"{signed}.{b64url_encode(signature)}"


def verify_compact(
    token: str | bytes, keys: Mapping[str, TrustedKey], *, max_size: int, typ: str
) -> tuple[dict[str, Any], bytes, TrustedKey]:
    """Check a compact JWS; returns (header, payload bytes, the key that verified it).

    Raises:
        BundleError: with ``reason`` saying which check failed.
    """
    # Bytes throughout, segments found by offset: a bundle is large (hundreds of KB), and every
    # copy of it costs page faults at client start.
    if isinstance(token, str):
        if not token.isascii():
            raise BundleError("bad_encoding", "a compact JWS is ASCII text")
        token = token.encode("ascii")
    elif not token.isascii():
        raise BundleError("bad_encoding", "a compact JWS is ASCII text")
    if len(token) > max_size:
        raise BundleError("too_large", f"{len(token)} bytes, the limit is {max_size}")
    token = token.strip()
    first = token.find(b".")
    second = token.find(b".", first + 1) if first != -1 else -1
    if second == -1 or token.find(b".", second + 1) != -1:
        raise BundleError(
            "bad_format",
            f"a compact JWS has 3 dot-separated parts, this has {token.count(b'.') + 1}",
        )
    if first > MAX_HEADER_SIZE:
        # The header is parsed before the signature is checked: keep it tiny.
        raise BundleError(
            "too_large", f"JWS header is {first} bytes, the limit is {MAX_HEADER_SIZE}"
        )
    header = _json_object(
        b64url_decode(token[:first], "JWS header"), "JWS header", max_depth=MAX_JSON_DEPTH
    )
    alg = header.get("alg")
    # Algorithm allow-list first: "none" and HMAC never reach a key (RFC 8725 §3.1).
    if alg == "EdDSA":
        raise BundleError(
            "bad_alg", "'EdDSA' is deprecated by RFC 9864; sign with the 'Ed25519' algorithm"
        )
    if alg not in ALGORITHMS:
        raise BundleError("bad_alg", f"algorithm {brief(alg)} is not allowed (only {ALGORITHMS})")
    if "crit" in header:
        raise BundleError(
            "bad_crit", f"critical header extensions {brief(header['crit'])} are not understood"
        )
    if header.get("typ", typ) != typ:
        raise BundleError("bad_typ", f"typ {brief(header.get('typ'))}, expected {typ!r}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise BundleError("unknown_kid", "the JWS header has no kid")
    key = keys.get(kid)
    if key is None:
        raise BundleError("unknown_kid", f"kid {brief(kid)} is not a trusted bundle key")
    if key.alg != alg:
        raise BundleError("bad_alg", f"key {kid} is an {key.alg} key, the header says {alg}")
    payload = b64url_decode(token[first + 1 : second], "JWS payload")
    signature = b64url_decode(token[second + 1 :], "JWS signature")
    # The signing input is the token up to the second dot: a view, not a copy.
    if not key.verify(signature, memoryview(token)[:second]):
        raise BundleError("bad_signature", f"the signature does not verify with key {kid}")
    return header, payload, key
