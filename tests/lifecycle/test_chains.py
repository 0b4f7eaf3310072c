"""certpin.lifecycle.chains: what a pin names (`Pin.matches` for certificates,
`Pin.matches_spki` for spare keys and CSRs), and the names wildcard keys are judged for."""

from __future__ import annotations

import datetime as dt

import pytest

from _support.pki import PKI
from certpin import DomainRule, Pin, Policy, VerdictStatus
from certpin.lifecycle.chains import (
    identify_spare,
    key_name,
    load_spares,
    pin_positions,
    verdict_for_name,
)
from certpin.lifecycle.keygen import generate

NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("file", ["key.pem", "csr.pem"])
def test_a_spare_key_is_named_by_its_pin_in_every_algorithm(tmp_path, algorithm, file):
    generate(tmp_path, "p256")
    (spare,) = load_spares([str(tmp_path / file)])
    pin = Pin.for_spki(spare.spki, algorithm)
    assert pin.matches_spki(spare.spki)
    assert identify_spare(pin, [spare]) is spare
    # Twins: another key's pin, and the certificate-fingerprint of nothing, name nothing.
    other = Pin.for_spki(spare.spki + b"x", algorithm)
    assert not other.matches_spki(spare.spki)
    assert identify_spare(other, [spare]) is None
    fingerprint = Pin.certificate_fingerprint(spare.spki, algorithm)
    assert not fingerprint.matches_spki(spare.spki)


def test_a_spare_certificate_is_named_as_a_chain_certificate_is(pki: PKI, tmp_path):
    path = tmp_path / "leaf.pem"
    path.write_bytes(pki.leaf.pem())
    (spare,) = load_spares([str(path)])
    assert identify_spare(Pin.for_certificate(pki.leaf.der(), "sha512"), [spare]) is spare
    assert identify_spare(Pin.for_certificate(pki.root.der()), [spare]) is None


def test_pin_positions_names_the_certificates_a_pin_matches(pki: PKI):
    chain = [pki.leaf.der(), pki.intermediate.der(), pki.root.der()]
    assert pin_positions(Pin.for_certificate(pki.intermediate.der()), chain) == [1]
    assert pin_positions(Pin.certificate_fingerprint(pki.leaf.der()), chain) == [0]
    # Twins: a pin of nothing in the chain, and bytes that are no certificate.
    assert pin_positions(Pin.for_spki(b"another key"), chain) == []
    assert pin_positions(Pin.for_certificate(pki.leaf.der()), [b"not DER"]) == []


def test_a_wildcard_name_is_judged_for_the_hosts_under_it(pki: PKI):
    leaf = Pin.for_certificate(pki.leaf.der())
    backup = Pin.for_spki(b"backup")
    wrong = (Pin.for_spki(b"x"), Pin.for_spki(b"y"))
    policy = Policy.from_rules(
        [
            DomainRule("*.example.com", pins=(leaf, backup)),
            DomainRule("api.example.com", pins=wrong),  # a key of its own: not "*.example.com"
        ]
    )
    chain = [pki.leaf.der()]
    result = verdict_for_name("*.example.com", chain, policy, NOW)
    assert result.status is VerdictStatus.OK and result.host == "*.example.com"
    assert result.rule is policy.domains["*.example.com"]
    assert verdict_for_name("API.example.com", chain, policy, NOW).status is VerdictStatus.FAILED
    # The wildcard's hosts are one label deep: deeper or at the base, no rule applies.
    assert verdict_for_name("*.a.example.com", chain, policy, NOW).status is VerdictStatus.UNPINNED
    assert verdict_for_name("example.com", chain, policy, NOW).status is VerdictStatus.UNPINNED


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("api.example.com", "api.example.com"),
        ("*.example.com", "*.example.com"),
        ("**.example.com", "example.com"),
    ],
)
def test_key_name(key: str, name: str) -> None:
    assert key_name(key) == name
