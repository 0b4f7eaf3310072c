"""Key loading, JWKs, signers and payload edges of `_jws` / `_bundle` (held at 100 % branches)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from _dyn import NOW, policy_doc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certpin import ConfigurationError, Pin
from certpin.dynamic import BundleError, FileSigner, TrustedKey, sign_bundle, verify_bundle
from certpin.dynamic.jws import (
    MAX_HEADER_SIZE,
    _json_object,
    b64url_encode,
    generate_private_key,
    key_from_jwk,
    load_trusted_keys,
    sign_compact,
    verify_compact,
)

POLICY = policy_doc({"api.example.com": [str(Pin(bytes([1]) * 32)), str(Pin(bytes([2]) * 32))]})
DAY = dt.timedelta(days=1)


def _pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem_private(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff", "not UTF-8 JSON"),
        (b"{", "not UTF-8 JSON"),
        (b'{"n": ' + b"7" * 5000 + b"}", "not UTF-8 JSON"),  # int beyond the digit limit
        # 3.11/3.12's json recurses (RecursionError); 3.13's does not, and the value is then
        # refused as not an object. Either way a rejection, never a crash.
        (b"[" * 5000 + b"]" * 5000, "too deeply nested|must be a JSON object"),
        (b'{"a": 1, "a": 2}', "repeats the member 'a'"),
    ],
)
def test_json_object_rejections(data: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=message) as err:
        _json_object(data, "thing")
    assert err.value.reason == "bad_json"


def test_json_object_accepts_an_object() -> None:
    assert _json_object(b'{"a": [1, {"b": null}]}', "thing") == {"a": [1, {"b": None}]}


def test_oversized_header_rejected_before_parsing(es256: FileSigner) -> None:
    header = b64url_encode(b'{"alg":"ES256","pad":"' + b"x" * MAX_HEADER_SIZE + b'"}')
    with pytest.raises(BundleError) as err:
        verify_compact(f"{header}.e30.AAAA", {}, max_size=1 << 20, typ="t")
    assert err.value.reason == "too_large" and "header" in err.value.detail
    # the twin just under the limit is parsed (and rejected for what it is: no kid)
    small = b64url_encode(b'{"alg":"ES256"}')
    with pytest.raises(BundleError) as err:
        verify_compact(f"{small}.e30.AAAA", {}, max_size=1 << 20, typ="t")
    assert err.value.reason == "unknown_kid"


# -- keys -------------------------------------------------------------------------------------


def test_p384_keys_are_refused_everywhere(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigurationError, match="secp384r1"):
        TrustedKey.from_pem(_pem_public(key))
    with pytest.raises(ConfigurationError, match="secp384r1"):
        FileSigner(key)
    path = tmp_path / "p384.pem"
    path.write_bytes(_pem_private(key))
    with pytest.raises(ConfigurationError, match=f"{path}: .*secp384r1"):
        FileSigner.from_file(path)


def test_rsa_keys_are_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigurationError, match="RSAPublicKey"):
        TrustedKey.from_pem(_pem_public(key).decode())
    path = tmp_path / "rsa.pem"
    path.write_bytes(_pem_private(key))
    with pytest.raises(ConfigurationError, match="RSAPrivateKey"):
        FileSigner.from_file(path)


def test_unreadable_and_garbage_key_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match="cannot read key"):
        TrustedKey.from_file(missing)
    with pytest.raises(ConfigurationError, match="cannot read key"):
        FileSigner.from_file(missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigurationError, match=f"{garbage}: not a PEM public key"):
        TrustedKey.from_file(garbage)
    with pytest.raises(ConfigurationError, match="not a usable PEM private key"):
        FileSigner.from_file(garbage)


@pytest.mark.parametrize("alg", ["ES256", "Ed25519"])
def test_keys_load_from_every_form(tmp_path: Path, alg: str) -> None:
    signer = FileSigner(generate_private_key(alg))
    path = tmp_path / "pub.pem"
    path.write_bytes(signer.public_pem())
    private = tmp_path / "priv.pem"
    private.write_bytes(signer.private_pem())
    keys = load_trusted_keys([signer.trusted_key, signer.public_pem(), path, str(path)])
    assert list(keys) == [signer.kid]
    assert FileSigner.from_file(private).kid == signer.kid
    again = TrustedKey.from_jwk(signer.trusted_key.jwk())
    assert again == signer.trusted_key and key_from_jwk(again.jwk()) is not None


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-256", "x": "AAAA"},  # no y
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},  # not on the curve
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},  # wrong length
        {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    ],
)
def test_bad_jwks(jwk: dict[str, str]) -> None:
    with pytest.raises(BundleError) as err:
        key_from_jwk(jwk)
    assert err.value.reason == "bad_key"


def test_generate_and_sign_with_unknown_algorithms() -> None:
    with pytest.raises(ConfigurationError, match="unknown algorithm 'RS256'"):
        generate_private_key("RS256")

    class HmacSigner:
        alg, kid = "HS256", "k"

        def sign(self, data: bytes) -> bytes:
            return b""

    with pytest.raises(ConfigurationError, match="HS256"):
        sign_compact(b"{}", HmacSigner(), "t")


# -- sign_bundle / verify_bundle edges ------------------------------------------------------------


class KmsSigner:
    """An HSM/KMS stand-in: not a FileSigner, so sign_bundle cannot pre-verify its output."""

    def __init__(self, inner: FileSigner) -> None:
        self.inner = inner
        self.alg, self.kid = inner.alg, inner.kid

    def sign(self, data: bytes) -> bytes:
        return self.inner.sign(data)


def test_time_forms(es256: FileSigner) -> None:
    naive = dt.datetime(2026, 2, 1, 6, 30)  # naive = UTC
    token = sign_bundle(
        POLICY,
        es256,
        version=1,
        expires=naive,
        issued_at=NOW,
        kill_switch={"domains": "*", "until": "2026-01-20", "reason": "r"},
    )
    bundle = verify_bundle(token, [es256.trusted_key], now=NOW.replace(tzinfo=None))  # naive now
    assert bundle.expires_at == naive.replace(tzinfo=dt.UTC)
    assert bundle.kill_switch is not None
    assert bundle.kill_switch.until == dt.datetime(2026, 1, 20, tzinfo=dt.UTC)
    dated = sign_bundle(POLICY, es256, version=1, expires=dt.date(2026, 2, 2), issued_at=NOW)
    expires = verify_bundle(dated, [es256.trusted_key], now=NOW).expires_at
    assert expires == dt.datetime(2026, 2, 2, tzinfo=dt.UTC)


def test_incomplete_kill_switch_and_rollout_are_refused_at_signing(es256: FileSigner) -> None:
    with pytest.raises(ConfigurationError, match="kill_switch.until"):
        sign_bundle(
            POLICY, es256, version=1, expires="2026-02-01", issued_at=NOW,
            kill_switch={"domains": "*", "reason": "no until"},
        )  # fmt: skip
    with pytest.raises(ConfigurationError, match="rollout"):
        sign_bundle(
            POLICY, es256, version=1, expires="2026-02-01", issued_at=NOW,
            rollout={"id": "r", "percent": 5},
        )  # fmt: skip


def test_kms_signer_output_is_not_pre_verified_but_verifies(es256: FileSigner) -> None:
    kms = KmsSigner(es256)
    token = sign_bundle(POLICY, kms, version=2, expires="2026-02-01", issued_at=NOW)
    assert verify_bundle(token, [es256.trusted_key], now=NOW).version == 2
    # ...so an invalid bundle from a KMS signer is caught by the verifier instead
    bad = sign_bundle(
        POLICY, kms, version=2, expires="2026-02-01", issued_at=NOW,
        kill_switch={"domains": "*", "reason": "no until"},
    )  # fmt: skip
    with pytest.raises(BundleError) as err:
        verify_bundle(bad, [es256.trusted_key], now=NOW)
    assert err.value.reason == "bad_payload"
