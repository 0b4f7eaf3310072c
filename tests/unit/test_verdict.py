"""verdict(): the one place pins are matched, against the verified chain, leaf first."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from _support.pki import PKI, make_pki, new_root
from certpin import ChainEntry, Pin, Policy, Verdict, VerdictStatus, verdict

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
HOST = "api.example.com"
UNRELATED = str(Pin(bytes([9]) * 32))
UNRELATED2 = str(Pin(bytes([10]) * 32))


@pytest.fixture(scope="module", params=["p256", "rsa2048", "ed25519", "p384"])
def chain_pki(request: pytest.FixtureRequest) -> PKI:
    return make_pki((HOST,), key=request.param)


@pytest.fixture(scope="module")
def p256() -> PKI:
    return make_pki((HOST,))


def pin(obj: Any) -> str:
    return str(Pin.for_certificate(obj.der()))


def pinned(rule: dict[str, Any], host: str = HOST, **top: Any) -> Policy:
    body = {"allow_single_pin": True, **rule}
    return Policy.from_dict({"domains": {host: body}, **top})


def check(pki: PKI, policy: Policy, host: str = HOST, now: dt.datetime = NOW) -> Verdict:
    return verdict(host, pki.leaf.chain_der(include_root=True), policy, now)


# -- OK and its failing twins ----------------------------------------------------------------------


@pytest.mark.parametrize("position", ["leaf", "intermediate", "root"])
def test_ok_via_any_chain_position(chain_pki: PKI, position: str) -> None:
    good = pin(getattr(chain_pki, position))
    v = check(chain_pki, pinned({"pins": [UNRELATED, good]}))
    assert v.status is VerdictStatus.OK
    assert v.allowed
    assert not v.pin_failure
    assert v.matched_pin == Pin.parse(good)
    assert v.reason == "a pin of the rule matched the verified chain"
    assert v.host == HOST
    assert v.noted_hostname == HOST
    assert v.now == NOW
    assert [e.der for e in v.chain] == chain_pki.leaf.chain_der()


def test_failed_with_wrong_pins(chain_pki: PKI) -> None:
    v = check(chain_pki, pinned({"pins": [UNRELATED, UNRELATED2]}))
    assert v.status is VerdictStatus.FAILED
    assert not v.allowed
    assert v.pin_failure
    assert v.matched_pin is None
    assert v.reason == "no pin of the rule matches the verified chain"


def test_rogue_chain_fails() -> None:
    real, rogue = make_pki((HOST,)), make_pki((HOST,), root_name="Rogue")
    policy = pinned({"pins": [pin(real.root), pin(real.intermediate)]})
    assert check(real, policy).status is VerdictStatus.OK
    assert check(rogue, policy).status is VerdictStatus.FAILED


def test_pin_survives_leaf_reissue_same_key(p256: PKI) -> None:
    policy = pinned({"pins": [pin(p256.leaf)]})
    reissued = p256.leaf.reissue()
    assert verdict(HOST, reissued.chain_der(), policy, NOW).status is VerdictStatus.OK
    new_key = p256.intermediate.issue_leaf(HOST)
    assert verdict(HOST, new_key.chain_der(), policy, NOW).status is VerdictStatus.FAILED


# -- slots -----------------------------------------------------------------------------------------


def test_leaf_pins_match_position_zero_only(p256: PKI) -> None:
    assert check(p256, pinned({"leaf_pins": [pin(p256.leaf)]})).status is VerdictStatus.OK
    for ca in (p256.intermediate, p256.root):
        v = check(p256, pinned({"leaf_pins": [pin(ca)]}))
        assert v.status is VerdictStatus.FAILED, ca.name


def test_ca_pins_match_positions_one_and_up(p256: PKI) -> None:
    for ca in (p256.intermediate, p256.root):
        v = check(p256, pinned({"ca_pins": [pin(ca)]}))
        assert v.status is VerdictStatus.OK
        assert v.matched_pin == Pin.parse(pin(ca))
    assert check(p256, pinned({"ca_pins": [pin(p256.leaf)]})).status is VerdictStatus.FAILED


def test_self_signed_leaf_alone_never_matches_ca_pins() -> None:
    root = new_root("lonely")
    policy = pinned({"ca_pins": [str(Pin.for_certificate(root.der()))]})
    assert verdict(HOST, [root.der()], policy, NOW).status is VerdictStatus.FAILED


@pytest.mark.parametrize(
    ("leaf_ok", "ca_ok", "expected"),
    [
        (True, True, VerdictStatus.OK),
        (True, False, VerdictStatus.FAILED),
        (False, True, VerdictStatus.FAILED),
        (False, False, VerdictStatus.FAILED),
    ],
)
def test_leaf_and_ca_pins_both_required(
    p256: PKI, leaf_ok: bool, ca_ok: bool, expected: VerdictStatus
) -> None:
    leaf_pin = pin(p256.leaf) if leaf_ok else UNRELATED
    ca_pin = pin(p256.intermediate) if ca_ok else UNRELATED2
    v = check(p256, pinned({"leaf_pins": [leaf_pin], "ca_pins": [ca_pin]}))
    assert v.status is expected
    if expected is VerdictStatus.OK:
        assert v.matched_pin == Pin.parse(leaf_pin)  # the first slot that decided


@pytest.mark.parametrize(
    ("pins_ok", "leaf_ok", "ca_ok", "expected"),
    [
        (True, True, True, VerdictStatus.OK),
        (False, True, True, VerdictStatus.FAILED),
        (True, False, True, VerdictStatus.FAILED),
        (True, True, False, VerdictStatus.FAILED),
    ],
)
def test_all_three_slots_must_match(
    p256: PKI, pins_ok: bool, leaf_ok: bool, ca_ok: bool, expected: VerdictStatus
) -> None:
    rule = {
        "pins": [pin(p256.root) if pins_ok else UNRELATED],
        "leaf_pins": [pin(p256.leaf) if leaf_ok else UNRELATED],
        "ca_pins": [pin(p256.intermediate) if ca_ok else UNRELATED],
    }
    v = check(p256, pinned(rule))
    assert v.status is expected
    if expected is VerdictStatus.OK:
        assert v.matched_pin == Pin.parse(pin(p256.root))


def test_ca_pin_matched_pin_reported(p256: PKI) -> None:
    v = check(p256, pinned({"leaf_pins": [pin(p256.leaf)], "ca_pins": [pin(p256.root)]}))
    assert v.matched_pin == Pin.parse(pin(p256.leaf))
    v = check(p256, pinned({"ca_pins": [UNRELATED, pin(p256.root)]}))
    assert v.matched_pin == Pin.parse(pin(p256.root))


# -- certificate-kind pins -------------------------------------------------------------------------


def test_certificate_pin_matches_whole_der(p256: PKI) -> None:
    cert_pin = str(Pin.certificate_fingerprint(p256.leaf.der()))
    policy = pinned({"leaf_pins": [cert_pin]})
    assert check(p256, policy).status is VerdictStatus.OK
    reissued = p256.leaf.reissue()  # same key, new certificate: the certificate pin no longer fits
    assert verdict(HOST, reissued.chain_der(), policy, NOW).status is VerdictStatus.FAILED
    hex_pin = Pin.certificate_fingerprint(p256.intermediate.der()).hex
    assert check(p256, pinned({"ca_pins": [hex_pin]})).status is VerdictStatus.OK


# -- unpinned / denied -----------------------------------------------------------------------------


def test_unpinned_host(p256: PKI) -> None:
    policy = pinned({"pins": [UNRELATED]})
    v = check(p256, policy, host="other.example.com")
    assert v.status is VerdictStatus.UNPINNED
    assert v.allowed and not v.pin_failure
    assert v.rule is None and v.noted_hostname is None and v.expected_pins == ()
    assert not v.report_only


def test_denied_host(p256: PKI) -> None:
    policy = pinned({"pins": [pin(p256.leaf)]}, unpinned_hosts="deny")
    v = check(p256, policy, host="other.example.com")
    assert v.status is VerdictStatus.DENIED
    assert not v.allowed
    assert 'unpinned_hosts = "deny"' in v.reason
    assert check(p256, policy).status is VerdictStatus.OK  # the pinned host still passes


def test_empty_chain_fails_even_unpinned(p256: PKI) -> None:
    policy = pinned({"pins": [pin(p256.leaf)]})
    for host in (HOST, "other.example.com"):
        v = verdict(host, [], policy, NOW)
        assert v.status is VerdictStatus.FAILED, host
        assert not v.allowed
        assert v.reason == "no verified certificate chain"
    assert verdict("x.example", [], Policy.from_dict({}), NOW).status is VerdictStatus.FAILED


# -- expiry ----------------------------------------------------------------------------------------

EXPIRES = dt.datetime(2027, 6, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (EXPIRES - dt.timedelta(seconds=1), VerdictStatus.FAILED),
        (EXPIRES, VerdictStatus.EXPIRED),
        (EXPIRES + dt.timedelta(seconds=1), VerdictStatus.EXPIRED),
    ],
)
def test_expiry_boundaries(p256: PKI, now: dt.datetime, expected: VerdictStatus) -> None:
    policy = pinned({"pins": [UNRELATED], "expires": "2027-06-30"})
    v = check(p256, policy, now=now)
    assert v.status is expected
    assert v.allowed is (expected is VerdictStatus.EXPIRED)
    if expected is VerdictStatus.EXPIRED:
        assert "expired at 2027-06-30T00:00:00+00:00; CA validation only" in v.reason


@pytest.mark.parametrize(
    ("naive_now", "expected"),
    [
        (dt.datetime(2027, 6, 29, 23, 59, 59), VerdictStatus.FAILED),
        (dt.datetime(2027, 6, 30, 0, 0, 0), VerdictStatus.EXPIRED),
    ],
)
def test_naive_now_is_taken_as_utc(
    p256: PKI, naive_now: dt.datetime, expected: VerdictStatus
) -> None:
    policy = pinned({"pins": [UNRELATED], "expires": "2027-06-30"})
    v = check(p256, policy, now=naive_now)
    assert v.status is expected
    assert v.now.tzinfo is dt.UTC


def test_expired_rule_with_good_pin_and_empty_chain(p256: PKI) -> None:
    policy = pinned({"pins": [pin(p256.leaf)], "expires": "2020-01-01"})
    assert check(p256, policy).status is VerdictStatus.EXPIRED
    assert verdict(HOST, [], policy, NOW).status is VerdictStatus.FAILED  # empty never passes


# -- fail closed -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param(lambda p: [b"garbage"], id="garbage-leaf"),
        pytest.param(lambda p: [p.leaf.der()[:-10], p.intermediate.der()], id="truncated-leaf"),
        pytest.param(lambda p: [b"\x30\x03\x02\x01\x01", p.root.der()], id="wrong-structure"),
    ],
)
def test_garbage_der_fails_without_exception(p256: PKI, chain: Any) -> None:
    policy = pinned({"pins": [pin(p256.root)]})
    v = verdict(HOST, chain(p256), policy, NOW)
    assert v.status is VerdictStatus.FAILED
    assert v.reason.startswith("cannot parse a certificate of the chain: ")
    message = v.message()  # describing a broken chain must not raise either
    assert "<no SPKI pin: not a DER certificate>" in message
    assert "<unparsable certificate" in message


@pytest.mark.parametrize("host", ["a..example.com", "", "-bad.example", "[not-ip]"])
def test_invalid_host_fails(p256: PKI, host: str) -> None:
    v = check(p256, pinned({"pins": [pin(p256.leaf)]}), host=host)
    assert v.status is VerdictStatus.FAILED
    assert v.rule is None
    assert v.host == host
    assert not v.allowed


def test_host_is_normalised(p256: PKI) -> None:
    v = check(p256, pinned({"pins": [pin(p256.leaf)]}), host="API.Example.com.")
    assert v.status is VerdictStatus.OK
    assert v.host == HOST


def test_wildcard_rule_noted_hostname(p256: PKI) -> None:
    policy = pinned({"pins": [pin(p256.leaf)]}, host="**.example.com")
    v = check(p256, policy)
    assert v.status is VerdictStatus.OK
    assert v.noted_hostname == "**.example.com"


# -- report-only -----------------------------------------------------------------------------------


def test_report_only_failure_is_allowed(p256: PKI) -> None:
    policy = pinned({"pins": [UNRELATED], "enforce": False})
    v = check(p256, policy)
    assert v.status is VerdictStatus.FAILED
    assert v.pin_failure and v.report_only
    assert v.allowed
    assert "(report-only)" in v.message()


def test_enforced_failure_is_not_report_only(p256: PKI) -> None:
    v = check(p256, pinned({"pins": [UNRELATED]}))
    assert not v.report_only and not v.allowed
    assert "(enforce)" in v.message()


# -- messages --------------------------------------------------------------------------------------


def test_message_contents(p256: PKI) -> None:
    policy = pinned({"pins": [UNRELATED, UNRELATED2], "leaf_pins": [UNRELATED]})
    v = check(p256, policy)
    msg = v.message()
    lines = msg.splitlines()
    assert lines[0] == (
        f"Certificate pinning failure for {HOST}: no pin of the rule matches the verified chain"
    )
    for cert in (p256.leaf, p256.intermediate, p256.root):
        subject = cert.cert.subject.rfc4514_string()
        assert f"    {pin(cert)}: {subject}" in lines
    assert f"  Pinned for {HOST} (enforce):" in lines
    # the pinned set, slot by slot, in order, labelled when more than one slot is set
    listed = [ln.strip() for ln in lines if ln.strip() in (UNRELATED, UNRELATED2)]
    assert listed == [UNRELATED, UNRELATED2, UNRELATED]
    assert "    pins (one must match):" in lines
    assert "    leaf_pins (one must match):" in lines
    assert "Hint:" in msg
    assert v.expected_pins == (Pin.parse(UNRELATED), Pin.parse(UNRELATED2))


def test_reason_names_the_slot_that_failed(p256: PKI) -> None:
    good_ca = pin(p256.intermediate)
    v = check(p256, pinned({"pins": [good_ca, UNRELATED], "leaf_pins": [UNRELATED, UNRELATED2]}))
    assert v.status is VerdictStatus.FAILED
    assert v.reason == "no leaf_pins entry matches the leaf certificate"
    v = check(
        p256, pinned({"leaf_pins": [pin(p256.leaf), UNRELATED], "ca_pins": [UNRELATED2, UNRELATED]})
    )
    assert v.reason == "no ca_pins entry matches a CA certificate of the chain"
    lines = v.message().splitlines()
    assert "    ca_pins (one must match):" in lines


def test_message_for_empty_and_unpinned() -> None:
    v = verdict("x.example", [], Policy.from_dict({}), NOW)
    msg = v.message()
    assert "(empty)" in msg
    assert "Pinned for" not in msg and "Hint:" not in msg


def test_chain_entry() -> None:
    pki = make_pki((HOST,))
    entry = ChainEntry(0, pki.leaf.der())
    assert entry.pin == Pin.for_certificate(pki.leaf.der())
    assert entry.subject == pki.leaf.cert.subject.rfc4514_string()
    assert entry.issuer == pki.intermediate.cert.subject.rfc4514_string()
    assert str(entry) == f"{entry.pin}: {entry.subject}"
    assert "der=" not in repr(entry)  # DER bytes are kept out of reprs and logs
    broken = ChainEntry(1, b"junk")
    assert broken.subject.startswith("<unparsable certificate")
    assert broken.issuer == "<unknown>"
    with pytest.raises(ValueError):
        _ = broken.pin


def test_chain_entry_identity_and_lazy_fields() -> None:
    pki = make_pki((HOST,))
    leaf_der, inter_der = pki.leaf.der(), pki.intermediate.der()
    a, b = ChainEntry(0, leaf_der), ChainEntry(0, bytes(leaf_der))
    assert a == b and hash(a) == hash(b)
    assert a != ChainEntry(1, leaf_der)
    assert a != ChainEntry(0, inter_der)
    assert a != (0, leaf_der)  # not equal to a look-alike tuple
    # issuer first, then subject: both come from one parse
    fresh = ChainEntry(1, inter_der)
    assert fresh.issuer == pki.root.cert.subject.rfc4514_string()
    assert fresh.subject == pki.intermediate.cert.subject.rfc4514_string()
