"""Bundle payload rules: format, versions, times, kill switch, rollout, key changes."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from _dyn import NOW, policy_doc

from certpin import ConfigurationError, Pin
from certpin.dynamic import BundleError, FileSigner, sign_bundle, verify_bundle
from certpin.dynamic.jws import b64url_encode, canonical_json, generate_private_key, sign_compact

A, B = str(Pin(bytes([1]) * 32)), str(Pin(bytes([2]) * 32))
POLICY = policy_doc({"api.example.com": [A, B]})
DAY = dt.timedelta(days=1)


def raw(signer: FileSigner, **payload: Any) -> str:
    body: dict[str, Any] = {
        "format": "certpin-bundle/1",
        "version": 1,
        "issued_at": "2026-01-15T12:00:00Z",
        "expires_at": "2026-02-15T00:00:00Z",
        "policy": POLICY,
    }
    body.update(payload)
    body = {k: v for k, v in body.items() if v is not None}
    return sign_compact(canonical_json(body), signer, "certpin-bundle+jws")


def reason(token: str, signer: FileSigner, now: dt.datetime = NOW, **kw: Any) -> str:
    with pytest.raises(BundleError) as err:
        verify_bundle(token, [signer.trusted_key], now=now, **kw)
    return err.value.reason


def test_round_trip(es256: FileSigner) -> None:
    token = sign_bundle(POLICY, es256, version=4, expires="2026-02-01", issued_at=NOW)
    b = verify_bundle(token, [es256.trusted_key], now=NOW)
    assert b.version == 4
    assert b.expires_at == dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert (
        b.policy.to_dict()
        == verify_bundle(token, {es256.kid: es256.trusted_key}, now=NOW).policy.to_dict()
    )
    assert sorted(b.policy.domains) == ["api.example.com"]


def test_signed_policy_is_compact_and_complete(es256: FileSigner) -> None:
    # Default-valued fields are left out of the signed document; non-default ones are kept.
    doc = policy_doc({"api.example.com": [A, B], "old.example.com": [A, B]})
    doc["domains"]["old.example.com"].update(enforce=False, include_subdomains=True)
    token = sign_bundle(doc, es256, version=1, expires="2026-02-01", issued_at=NOW)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["policy"]["domains"] == {
        "api.example.com": {"pins": [A, B]},
        "old.example.com": {"pins": [A, B], "include_subdomains": True, "enforce": False},
    }
    from certpin import Policy

    assert verify_bundle(token, [es256.trusted_key], now=NOW).policy == Policy.from_dict(doc)


@pytest.mark.parametrize("fmt", ["certpin-bundle/2", "other", None, 1])
def test_unknown_format(es256: FileSigner, fmt: Any) -> None:
    token = raw(es256, format=fmt) if fmt is not None else raw(es256, format=None)
    assert reason(token, es256) == "bad_format"


def test_unknown_member_rejected(es256: FileSigner) -> None:
    assert reason(raw(es256, surprise=1), es256) == "bad_payload"


@pytest.mark.parametrize("version", [-1, "3", True, 1.5])
def test_bad_version(es256: FileSigner, version: Any) -> None:
    assert reason(raw(es256, version=version), es256) == "bad_payload"


def test_min_version_rollback(es256: FileSigner) -> None:
    token = raw(es256, version=5)
    assert reason(token, es256, min_version=6) == "rollback"
    assert verify_bundle(token, [es256.trusted_key], now=NOW, min_version=5).version == 5


def test_expired_bundle(es256: FileSigner) -> None:
    token = raw(es256)
    expiry = dt.datetime(2026, 2, 15, tzinfo=dt.UTC)
    assert reason(token, es256, now=expiry) == "expired"
    assert verify_bundle(token, [es256.trusted_key], now=expiry - dt.timedelta(seconds=1))
    assert verify_bundle(token, [es256.trusted_key], now=expiry, check_expiry=False)


def test_future_issued_at(es256: FileSigner) -> None:
    token = raw(es256, issued_at="2026-01-15T12:06:00Z")
    assert reason(token, es256) == "future"  # 6 min ahead, skew is 5
    assert verify_bundle(token, [es256.trusted_key], now=NOW + dt.timedelta(minutes=1))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("issued_at", "yesterday"),
        ("issued_at", 12),
        ("expires_at", "2026-02-15T00:00:00"),
        ("expires_at", "2026-01-01T00:00:00Z"),
    ],
)
def test_bad_times(es256: FileSigner, field: str, value: Any) -> None:
    assert reason(raw(es256, **{field: value}), es256) == "bad_payload"


def test_invalid_policy_in_bundle(es256: FileSigner) -> None:
    assert (
        reason(raw(es256, policy={"domains": {"a.example.com": {"pins": [A]}}}), es256)
        == "bad_policy"
    )
    assert reason(raw(es256, policy=[1]), es256) == "bad_policy"


def test_kill_switch_limits(es256: FileSigner) -> None:
    ok = {"domains": ["api.example.com"], "until": "2026-02-14T12:00:00Z", "reason": "x"}
    b = verify_bundle(raw(es256, kill_switch=ok), [es256.trusted_key], now=NOW)
    assert b.kill_switch is not None and b.kill_switch.domains == ("api.example.com",)
    too_long = {**ok, "until": "2026-02-14T12:00:01Z"}  # 30 days + 1 s after issued_at
    assert reason(raw(es256, kill_switch=too_long), es256) == "bad_kill_switch"
    for bad in (
        {**ok, "domains": []},
        {**ok, "domains": "api.example.com"},
        {**ok, "domains": ["bad..host"]},
        {**ok, "reason": 5},
        {**ok, "extra": 1},
        "*",
    ):
        assert reason(raw(es256, kill_switch=bad), es256) == "bad_kill_switch"
    star = verify_bundle(
        raw(es256, kill_switch={**ok, "domains": "*"}), [es256.trusted_key], now=NOW
    )
    assert star.kill_switch is not None and star.kill_switch.domains == "*"


def test_rollout_rules(es256: FileSigner) -> None:
    ro = {"id": "q1", "percent": 12.5, "policy": POLICY}
    b = verify_bundle(raw(es256, rollout=ro), [es256.trusted_key], now=NOW)
    assert b.rollout is not None and b.rollout.buckets == 1250
    for bad in (
        {**ro, "percent": 101},
        {**ro, "percent": True},
        {**ro, "id": ""},
        {"id": "q1"},
        {**ro, "policy": {"x": 1}},
    ):
        assert reason(raw(es256, rollout=bad), es256) in ("bad_rollout", "bad_policy")


def test_key_changes(es256: FileSigner) -> None:
    nxt = FileSigner(generate_private_key("Ed25519"))
    token = sign_bundle(
        POLICY,
        es256,
        version=1,
        expires="2026-02-01",
        issued_at=NOW,
        add_keys=[nxt.trusted_key],
        retire_keys=["old-kid"],
    )
    b = verify_bundle(token, [es256.trusted_key], now=NOW)
    assert [k.kid for k in b.add_keys] == [nxt.kid] and b.retire_keys == ("old-kid",)
    assert reason(raw(es256, keys={"retire": [es256.kid]}), es256) == "bad_keys"
    assert reason(raw(es256, keys={"add": [{"kty": "RSA"}]}), es256) == "bad_key"
    assert reason(raw(es256, keys={"add": "x"}), es256) == "bad_keys"
    assert reason(raw(es256, keys={"retire": [1]}), es256) == "bad_keys"
    assert reason(raw(es256, keys=[]), es256) == "bad_keys"


def test_sign_bundle_refuses_invalid_input(es256: FileSigner) -> None:
    with pytest.raises(ConfigurationError, match="version"):
        sign_bundle(POLICY, es256, version=-1, expires="2026-02-01")
    with pytest.raises(ConfigurationError, match="30 days"):
        sign_bundle(
            POLICY,
            es256,
            version=1,
            expires="2026-03-01",
            issued_at=NOW,
            kill_switch={"domains": "*", "until": NOW + 31 * DAY, "reason": "x"},
        )
    with pytest.raises(ConfigurationError, match="pins"):
        sign_bundle(
            {"domains": {"a.example.com": {"pins": []}}}, es256, version=1, expires="2026-02-01"
        )


def test_payload_is_canonical_json(es256: FileSigner) -> None:
    token = sign_bundle(POLICY, es256, version=1, expires="2026-02-01", issued_at=NOW)
    payload = token.split(".")[1]
    from certpin.dynamic.jws import b64url_decode

    data = b64url_decode(payload)
    assert data == canonical_json(json.loads(data))
    assert b64url_encode(data) == payload
