"""The JWS envelope: algorithms, kid, crit, canonical base64url, sizes, tampering."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from _dyn import NOW, policy_doc

from certpin import Pin
from certpin.dynamic import BundleError, FileSigner, TrustedKey, sign_bundle, verify_bundle
from certpin.dynamic.jws import (
    b64url_decode,
    b64url_encode,
    es256_raw,
    generate_private_key,
    thumbprint,
)

POLICY = policy_doc({"api.example.com": [str(Pin(bytes([1]) * 32)), str(Pin(bytes([2]) * 32))]})


def make(signer: FileSigner, **kw: object) -> str:
    args: dict[str, object] = {
        "version": 1,
        "expires": NOW + dt.timedelta(days=30),
        "issued_at": NOW,
    }
    args.update(kw)
    return sign_bundle(POLICY, signer, **args)  # type: ignore[arg-type]


def check(token: str | bytes, *keys: TrustedKey, **kw: object) -> object:
    return verify_bundle(token, keys, now=NOW, **kw)  # type: ignore[arg-type]


def reassemble(header: dict[str, object], payload: bytes, sig: bytes) -> str:
    h = b64url_encode(json.dumps(header).encode())
    return f"{h}.{b64url_encode(payload)}.{b64url_encode(sig)}"


def parts(token: str) -> tuple[dict[str, object], bytes, bytes]:
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), b64url_decode(p), b64url_decode(s)


def test_valid_bundle_verifies(signer: FileSigner) -> None:
    b = check(make(signer), signer.trusted_key)
    assert b.version == 1 and b.kid == signer.kid  # type: ignore[attr-defined]
    header, _, sig = parts(make(signer))
    assert header == {"alg": signer.alg, "kid": signer.kid, "typ": "certpin-bundle+jws"}
    assert len(sig) == 64  # ES256 is raw r||s (RFC 7518 §3.4), not DER; Ed25519 is 64 too


def test_es256_signature_is_raw_r_s_not_der(es256: FileSigner) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    token = make(es256)
    h, p, s = token.split(".")
    sig = b64url_decode(s)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    es256.trusted_key.key.verify(der, f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
    # a DER signature in the JWS is rejected
    forged = f"{h}.{p}.{b64url_encode(der)}"
    with pytest.raises(BundleError) as err:
        check(forged, es256.trusted_key)
    assert err.value.reason == "bad_signature"
    assert es256_raw(der) == sig


def test_rfc8037_ed25519_thumbprint_vector() -> None:
    # RFC 8037 Appendix A.3
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert TrustedKey.from_jwk(jwk).kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_wrong_key_is_unknown_kid(signer: FileSigner) -> None:
    other = FileSigner(generate_private_key(signer.alg))
    with pytest.raises(BundleError) as err:
        check(make(signer), other.trusted_key)
    assert err.value.reason == "unknown_kid"


def test_forged_signature_with_other_key_under_trusted_kid(signer: FileSigner) -> None:
    attacker = FileSigner(generate_private_key(signer.alg))
    header, payload, _ = parts(make(signer))
    h = b64url_encode(json.dumps(header).encode())
    signing_input = f"{h}.{b64url_encode(payload)}"
    forged = f"{signing_input}.{b64url_encode(attacker.sign(signing_input.encode()))}"
    with pytest.raises(BundleError) as err:
        check(forged, signer.trusted_key)
    assert err.value.reason == "bad_signature"


def test_modified_payload_fails(signer: FileSigner) -> None:
    header, payload, sig = parts(make(signer))
    evil = payload.replace(b'"version":1', b'"version":9')
    assert evil != payload
    with pytest.raises(BundleError) as err:
        check(reassemble(header, evil, sig), signer.trusted_key)
    assert err.value.reason == "bad_signature"


def test_alg_none_rejected(signer: FileSigner) -> None:
    header, payload, _ = parts(make(signer))
    header["alg"] = "none"
    token = reassemble(header, payload, b"")
    with pytest.raises(BundleError) as err:
        check(token, signer.trusted_key)
    assert err.value.reason == "bad_alg"


def test_hs256_with_public_key_as_secret_rejected(es256: FileSigner) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = es256.trusted_key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": es256.kid, "typ": "certpin-bundle+jws"}
    _, payload, _ = parts(make(es256))
    h = b64url_encode(json.dumps(header).encode())
    signing_input = f"{h}.{b64url_encode(payload)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(BundleError) as err:
        check(f"{signing_input}.{b64url_encode(mac)}", es256.trusted_key)
    assert err.value.reason == "bad_alg"


def test_legacy_eddsa_name_rejected() -> None:
    signer = FileSigner(generate_private_key("Ed25519"))
    header, payload, _ = parts(make(signer))
    header["alg"] = "EdDSA"
    h = b64url_encode(json.dumps(header).encode())
    signing_input = f"{h}.{b64url_encode(payload)}"
    token = f"{signing_input}.{b64url_encode(signer.sign(signing_input.encode()))}"
    with pytest.raises(BundleError, match="RFC 9864") as err:
        check(token, signer.trusted_key)
    assert err.value.reason == "bad_alg"


def test_alg_must_match_the_keys_algorithm() -> None:
    ed = FileSigner(generate_private_key("Ed25519"))
    header, payload, _ = parts(make(ed))
    header["alg"] = "ES256"
    h = b64url_encode(json.dumps(header).encode())
    signing_input = f"{h}.{b64url_encode(payload)}"
    token = f"{signing_input}.{b64url_encode(ed.sign(signing_input.encode()))}"
    with pytest.raises(BundleError) as err:
        check(token, ed.trusted_key)
    assert err.value.reason == "bad_alg"


@pytest.mark.parametrize("crit", [["exp"], [], ["b64"]])
def test_any_crit_rejected(signer: FileSigner, crit: list[str]) -> None:
    header, payload, _ = parts(make(signer))
    header["crit"] = crit
    h = b64url_encode(json.dumps(header).encode())
    signing_input = f"{h}.{b64url_encode(payload)}"
    token = f"{signing_input}.{b64url_encode(signer.sign(signing_input.encode()))}"
    with pytest.raises(BundleError) as err:
        check(token, signer.trusted_key)
    assert err.value.reason == "bad_crit"


def test_duplicate_header_member_rejected(signer: FileSigner) -> None:
    raw = f'{{"alg":"{signer.alg}","kid":"{signer.kid}","alg":"none"}}'.encode()
    _, payload, _ = parts(make(signer))
    signing_input = f"{b64url_encode(raw)}.{b64url_encode(payload)}"
    token = f"{signing_input}.{b64url_encode(signer.sign(signing_input.encode()))}"
    with pytest.raises(BundleError) as err:
        check(token, signer.trusted_key)
    assert err.value.reason == "bad_json"


def test_non_canonical_base64url_rejected(signer: FileSigner) -> None:
    token = make(signer)
    h, p, s = token.split(".")
    # Flip the unused low bits of the signature's last character: same bytes, other spelling.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(s[-1])
    twin = s[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin + "=" * (-len(twin) % 4)) == b64url_decode(s)
    with pytest.raises(BundleError) as err:
        check(f"{h}.{p}.{twin}", signer.trusted_key)
    assert err.value.reason == "bad_encoding"
    for bad in (
        s + "=",
        s.replace("-", "+").replace("_", "/") if ("-" in s or "_" in s) else s + "+",
    ):
        with pytest.raises(BundleError):
            check(f"{h}.{p}.{bad}", signer.trusted_key)


def test_padded_base64url_rejected(signer: FileSigner) -> None:
    # Padding to a multiple of 4 is a second spelling of the same bytes: refused in every
    # segment (the signature segment is not covered by the signature, so only this check
    # keeps one bundle to one token).
    token = make(signer)
    segments = token.split(".")
    for i, seg in enumerate(segments):
        if len(seg) % 4 == 0:
            continue
        padded = list(segments)
        padded[i] = seg + "=" * (-len(seg) % 4)
        with pytest.raises(BundleError) as err:
            check(".".join(padded), signer.trusted_key)
        assert err.value.reason in ("bad_encoding", "bad_signature")
    for text in ("AAA=", "AA==", "AAAA====", b"AAA="):
        with pytest.raises(BundleError, match="unpadded"):
            b64url_decode(text)
    assert b64url_decode(b"AAA") == b64url_decode("AAA") == b"\x00\x00"


@pytest.mark.parametrize("where", ["token", "segment"])
def test_non_ascii_text_rejected(signer: FileSigner, where: str) -> None:
    token = make(signer)
    with pytest.raises(BundleError) as err:
        if where == "token":
            check(token[:-1] + "é", signer.trusted_key)
        else:
            b64url_decode("AAé")
    assert err.value.reason == "bad_encoding"


@pytest.mark.parametrize("cut", [1, 10, 50, -1])
def test_truncated_bundle_rejected(signer: FileSigner, cut: int) -> None:
    token = make(signer)
    with pytest.raises(BundleError):
        check(token[:cut] if cut > 0 else token[:cut], signer.trusted_key)


def test_oversized_bundle_rejected_before_parsing(signer: FileSigner) -> None:
    token = make(signer)
    with pytest.raises(BundleError) as err:
        check(token, signer.trusted_key, max_size=len(token) - 1)
    assert err.value.reason == "too_large"
    with pytest.raises(BundleError) as err:
        check(token.encode() + b" " * 10, signer.trusted_key, max_size=len(token) + 5)
    assert err.value.reason == "too_large"
    assert check(token, signer.trusted_key, max_size=len(token))


@pytest.mark.parametrize("garbage", [b"\xff\xfe", b"a.b", b"a.b.c.d", b"", b"..."])
def test_garbage_rejected(es256: FileSigner, garbage: bytes) -> None:
    with pytest.raises(BundleError):
        check(garbage, es256.trusted_key)


def test_every_bit_flip_fails_verification() -> None:
    """Exhaustive: every bit of every byte of a small bundle, flipped alone, fails."""
    token = _TOKEN.encode()
    assert verify_bundle(token, [_SIGNER.trusted_key], now=NOW).version == 3  # the twin
    survivors = []
    for index in range(len(token)):
        for bit in range(8):
            flipped = bytearray(token)
            flipped[index] ^= 1 << bit
            try:
                verify_bundle(bytes(flipped), [_SIGNER.trusted_key], now=NOW)
            except BundleError:
                continue
            survivors.append((index, bit))
    assert survivors == []


_SIGNER = FileSigner(generate_private_key("Ed25519"))
_TOKEN = sign_bundle(POLICY, _SIGNER, version=3, expires=NOW + dt.timedelta(days=9), issued_at=NOW)
