"""Verdict states used by dynamic pinning: KILLED (signed kill switch) and TOFU_MISMATCH."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from _support.pki import PKI, make_pki
from certpin import KillSwitch, Pin, Policy, VerdictStatus, verdict

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
HOST = "api.example.com"
UNRELATED = str(Pin(bytes([9]) * 32))
UNRELATED2 = str(Pin(bytes([10]) * 32))


@pytest.fixture(scope="module")
def p256() -> PKI:
    return make_pki((HOST,))


def with_rule(policy: Policy, **changes: object) -> Policy:
    rule = dataclasses.replace(policy.domains[HOST], **changes)  # type: ignore[arg-type]
    return policy.replace_rules([rule])


def base(**top: object) -> Policy:
    return Policy.from_dict({"domains": {HOST: {"pins": [UNRELATED, UNRELATED2]}}, **top})


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (NOW - dt.timedelta(seconds=1), VerdictStatus.KILLED),
        (NOW, VerdictStatus.FAILED),
        (NOW + dt.timedelta(seconds=1), VerdictStatus.FAILED),
    ],
)
def test_kill_switch_only_until(p256: PKI, now: dt.datetime, expected: VerdictStatus) -> None:
    policy = with_rule(base(), kill_switch=KillSwitch(until=NOW, reason="lockout INC-7"))
    v = verdict(HOST, p256.leaf.chain_der(), policy, now)
    assert v.status is expected
    assert v.allowed is (expected is VerdictStatus.KILLED)
    if expected is VerdictStatus.KILLED:
        assert "KILL SWITCH" in v.reason and "lockout INC-7" in v.reason
        assert not v.pin_failure


def test_kill_switch_without_reason_says_so(p256: PKI) -> None:
    policy = with_rule(base(), kill_switch=KillSwitch(until=NOW + dt.timedelta(days=1)))
    v = verdict(HOST, p256.leaf.chain_der(), policy, NOW)
    assert v.status is VerdictStatus.KILLED
    assert "no reason given" in v.reason


def test_killed_is_never_denied_by_unpinned_hosts_deny(p256: PKI) -> None:
    killed = KillSwitch(until=NOW + dt.timedelta(days=1), reason="r")
    policy = with_rule(base(unpinned_hosts="deny"), kill_switch=killed)
    assert verdict(HOST, p256.leaf.chain_der(), policy, NOW).status is VerdictStatus.KILLED
    # the twin: another host is still denied
    other = verdict("other.example.com", p256.leaf.chain_der(), policy, NOW)
    assert other.status is VerdictStatus.DENIED


def test_killed_still_needs_a_verified_chain() -> None:
    policy = with_rule(base(), kill_switch=KillSwitch(until=NOW + dt.timedelta(days=1)))
    v = verdict(HOST, [], policy, NOW)
    assert v.status is VerdictStatus.FAILED
    assert not v.allowed


def test_kill_switch_is_not_written_to_policy_files() -> None:
    policy = with_rule(base(), kill_switch=KillSwitch(until=NOW), tofu=True)
    assert "kill_switch" not in policy.to_dict()["domains"][HOST]
    assert "tofu" not in policy.to_dict()["domains"][HOST]


def test_tofu_mismatch_names_old_and_new_pins(p256: PKI) -> None:
    policy = with_rule(base(), tofu=True)
    v = verdict(HOST, p256.leaf.chain_der(), policy, NOW)
    assert v.status is VerdictStatus.TOFU_MISMATCH
    assert v.pin_failure and not v.allowed
    assert UNRELATED in v.reason
    assert str(Pin.for_certificate(p256.leaf.der())) in v.reason
    assert v.expected_pins == (Pin.parse(UNRELATED), Pin.parse(UNRELATED2))


def test_tofu_match_is_ok(p256: PKI) -> None:
    leaf = str(Pin.for_certificate(p256.leaf.der()))
    policy = Policy.from_dict({"domains": {HOST: {"pins": [leaf], "allow_single_pin": True}}})
    v = verdict(HOST, p256.leaf.chain_der(), with_rule(policy, tofu=True), NOW)
    assert v.status is VerdictStatus.OK


def test_tofu_report_only_mismatch_is_allowed(p256: PKI) -> None:
    policy = with_rule(base(), tofu=True, enforce=False)
    v = verdict(HOST, p256.leaf.chain_der(), policy, NOW)
    assert v.status is VerdictStatus.TOFU_MISMATCH
    assert v.allowed and v.report_only
