"""Issue item 7: ES256 malleability. ``(r, n - s)`` verifies as well as ``(r, s)``; a CDN that
serves that twin first must not make the publisher's genuine bytes look like equivocation.

Equivocation compares the JWS signing input (protected header + payload); certpin's signer
emits low-S signatures.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from _dyn import BACKUP, BundleHost, policy_doc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from certpin import Pin, Policy
from certpin.dynamic import DynamicPolicy, FileSigner, sign_bundle, verify_bundle
from certpin.dynamic.jws import b64url_decode, b64url_encode, es256_raw, sign_compact

DAY = dt.timedelta(days=1)
#: The order of the P-256 group (FIPS 186-4 D.1.2.3).
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
OTHER = str(Pin(bytes([9]) * 32))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def twin(token: str) -> str:
    """The ``(r, n - s)`` twin of an ES256 token: other bytes, same signed bytes, valid."""
    head, payload, sig = token.split(".")
    raw = b64url_decode(sig)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    return f"{head}.{payload}.{b64url_encode(r + (N - s).to_bytes(32, 'big'))}"


def low_s(token: str) -> bool:
    return int.from_bytes(b64url_decode(token.rsplit(".", 1)[1])[32:], "big") <= N // 2


def client(host: BundleHost, signer: FileSigner, fallback: Policy, tmp: Path) -> DynamicPolicy:
    return DynamicPolicy(
        host.url,
        trusted_keys=[signer.trusted_key],
        cache_dir=tmp / "cache",
        fallback=fallback,
        cafile=host.files.root_ca,
        timeout=2.0,
    )


def doc(bootstrap: Policy, extra: list[str] | None = None) -> dict[str, Any]:
    pins = {"localhost": [str(p) for p in bootstrap.domains["localhost"].all_pins]}
    if extra is not None:
        pins["127.0.0.1"] = extra
    return policy_doc(pins)


def test_the_twin_is_a_valid_signature(es256: FileSigner, bootstrap: Policy) -> None:
    token = sign_bundle(doc(bootstrap), es256, version=1, expires=now() + DAY)
    other = twin(token)
    assert other != token
    a = verify_bundle(token, [es256.trusted_key], now=now())
    b = verify_bundle(other, [es256.trusted_key], now=now())
    # Accepted on verification: platform verifiers (Apple CryptoKit, Android's
    # java.security.Signature) accept high-S too, so refusing it would split clients.
    assert a.signed_sha256 == b.signed_sha256 and a.sha256 != b.sha256
    assert a == b


def test_twin_served_first_then_the_genuine_bundle_is_not_equivocation(
    bundle_host: BundleHost,
    es256: FileSigner,
    bootstrap: Policy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    genuine = sign_bundle(doc(bootstrap, [BACKUP, OTHER]), es256, version=1, expires=now() + DAY)
    bundle_host.publish(twin(genuine))  # a CDN (or an attacker on it) serves the twin first
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    assert dyn.refresh_now().status == "updated"
    bundle_host.publish(genuine)
    with caplog.at_level(logging.INFO, "certpin.dynamic"):
        result = dyn.refresh_now()
        assert (result.status, result.version) == ("unchanged", 1)
        assert dyn.accept(twin(genuine)).status == "unchanged"
        restarted = client(bundle_host, es256, bootstrap, tmp_path)  # from the cache
        assert restarted.version == 1
        assert restarted.accept(genuine).status == "unchanged"
        assert restarted.refresh_now().status == "not_modified"  # the genuine bytes' ETag
    assert "equivocation" not in caplog.text
    assert "127.0.0.1" in restarted.current_policy().domains


def test_the_failing_twin_other_content_same_version_is_equivocation(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, tmp_path: Path
) -> None:
    bundle_host.publish(sign_bundle(doc(bootstrap), es256, version=1, expires=now() + DAY))
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    assert dyn.refresh_now().status == "updated"
    other = sign_bundle(doc(bootstrap, [BACKUP, OTHER]), es256, version=1, expires=now() + DAY)
    for token in (other, twin(other)):
        bundle_host.publish(token)
        result = dyn.refresh_now()
        assert result.status == "rejected" and "equivocation" in result.reason
        assert "127.0.0.1" not in dyn.current_policy().domains
    restarted = client(bundle_host, es256, bootstrap, tmp_path)
    r = restarted.refresh_now()
    assert r.status == "rejected" and "equivocation" in r.reason


def test_a_cache_written_before_the_change_is_still_read(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, tmp_path: Path
) -> None:
    """state.json files that only know the whole-token hash keep their bundle in force."""
    token = sign_bundle(doc(bootstrap), es256, version=3, expires=now() + DAY)
    bundle_host.publish(token)
    client(bundle_host, es256, bootstrap, tmp_path).refresh_now()
    state_file = tmp_path / "cache" / "state.json"
    state = json.loads(state_file.read_text())
    legacy = {k: state[k] for k in ("highest_version", "highest_sha256", "etag")}
    state_file.write_text(json.dumps(legacy))
    restarted = client(bundle_host, es256, bootstrap, tmp_path)
    assert restarted.version == 3
    bundle_host.publish(twin(token))
    assert restarted.refresh_now().status == "unchanged"
    # the twin: a legacy state whose hash matches no cached bundle is a mismatch, fail closed
    state_file.write_text(json.dumps({**legacy, "highest_sha256": "0" * 64}))
    assert client(bundle_host, es256, bootstrap, tmp_path).version is None


def test_certpin_signs_low_s(es256: FileSigner) -> None:
    tokens = [sign_compact(b"{}", es256, "t") for _ in range(64)]
    assert all(low_s(t) for t in tokens)
    # The twin: `cryptography` alone produces high-S about half the time (so the check above
    # can fail), and the DER -> JWS conversion for KMS signatures normalises it as well.
    key = es256._key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ders = [key.sign(b"x", ec.ECDSA(hashes.SHA256())) for _ in range(64)]
    highs = [d for d in ders if decode_dss_signature(d)[1] > N // 2]
    assert highs
    assert all(int.from_bytes(es256_raw(d)[32:], "big") <= N // 2 for d in highs)


def test_sign_compact_normalises_a_high_s_signer(es256: FileSigner) -> None:
    class HighS:
        alg, kid = es256.alg, es256.kid

        def sign(self, data: bytes) -> bytes:
            raw = es256.sign(data)
            s = int.from_bytes(raw[32:], "big")
            return raw[:32] + max(s, N - s).to_bytes(32, "big")

    token = sign_compact(b"{}", HighS(), "t")
    assert low_s(token)


def test_certpin_bundle_sign_writes_low_s(tmp_path: Path) -> None:
    """The CLI signer (ES256 is keygen's default): 24 signatures, all low-S (a high-S one
    slips through with probability 2^-24 per run if the normalisation is missing)."""
    from certpin.cli.main import main

    key, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    assert main(["bundle", "keygen", "--key", str(key), "--pub", str(pub)]) == 0
    policy = tmp_path / "pins.json"
    policy.write_text(json.dumps(policy_doc({"api.example.com": [BACKUP, OTHER]})))
    for n in range(24):
        out = tmp_path / f"b{n}.jws"
        args = ["bundle", "sign", str(policy), "--key", str(key), "--version", str(n)]
        assert main([*args, "--expires", "30d", "--out", str(out)]) == 0
        token = out.read_text().strip()
        assert json.loads(b64url_decode(token.split(".")[0]))["alg"] == "ES256"
        assert low_s(token)
