"""CP109 (placeholder pins) and CP209 (a leaf pin borrowed from an unrelated host), with twins."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from _support.pki import make_pki
from certpin import Pin, Policy
from certpin.lifecycle.chains import DomainChain
from certpin.lifecycle.lint import Finding, lint_policy

from ._helpers import random_pin

EMPTY = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
ZEROS = "sha256/" + "A" * 43 + "="
NOW = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)


def _lint(domains: dict[str, dict[str, Any]], **kwargs: Any) -> list[Finding]:
    return lint_policy(Policy.from_dict({"domains": domains}), now=NOW, **kwargs)


def _cp(findings: list[Finding], rule: str) -> list[tuple[str | None, str]]:
    return [(f.domain, f.severity) for f in findings if f.rule == rule]


@pytest.mark.parametrize(
    ("pins", "enforce", "severity"),
    [
        # the placeholder is the only backup of an enforcing rule: error
        ([random_pin(), EMPTY], True, "error"),
        # report-only: a warning
        ([random_pin(), EMPTY], False, "warning"),
        # a real backup besides it: a warning
        ([random_pin(), random_pin(), ZEROS], True, "warning"),
        # nothing real at all: every connection fails
        ([EMPTY, ZEROS], True, "error"),
    ],
)
def test_cp109_placeholder(pins: list[str], enforce: bool, severity: str) -> None:
    findings = _lint({"a.example.com": {"pins": pins, "enforce": enforce}})
    found = _cp(findings, "CP109")
    assert found and {s for _, s in found} == {severity}


def test_cp109_twin_real_pins_only() -> None:
    assert not _cp(_lint({"a.example.com": {"pins": [random_pin(), random_pin()]}}), "CP109")


def _chain(key: str, pki: Any) -> DomainChain:
    return DomainChain(key, key, tuple(pki.leaf.chain_der()), "file test")


def test_cp209_leaf_pin_of_an_unrelated_host() -> None:
    a, b = make_pki(("a.example.com",)), make_pki(("b.other.net",))
    leaf_a = str(Pin.for_certificate(a.leaf.der()))
    leaf_b = str(Pin.for_certificate(b.leaf.der()))
    chains = {"a.example.com": _chain("a.example.com", a), "b.other.net": _chain("b.other.net", b)}
    findings = _lint(
        {
            "a.example.com": {"pins": [leaf_a, leaf_b]},  # b's leaf copied as a's "backup"
            "b.other.net": {"pins": [leaf_b, random_pin()]},
        },
        chains=chains,
    )
    assert _cp(findings, "CP209") == [("a.example.com", "warning")]
    message = next(f.message for f in findings if f.rule == "CP209")
    assert f"{leaf_b} is the leaf key of b.other.net" in message


def test_cp209_twins() -> None:
    # The same copy between hosts of one site (a shared key is plausible there): no finding.
    a, b = make_pki(("a.example.com",)), make_pki(("b.example.com",))
    leaf_a = str(Pin.for_certificate(a.leaf.der()))
    leaf_b = str(Pin.for_certificate(b.leaf.der()))
    chains = {
        "a.example.com": _chain("a.example.com", a),
        "b.example.com": _chain("b.example.com", b),
    }
    domains = {
        "a.example.com": {"pins": [leaf_a, leaf_b]},
        "b.example.com": {"pins": [leaf_b, random_pin()]},
    }
    assert not _cp(_lint(domains, chains=chains), "CP209")
    # A CA key shared by unrelated hosts is legitimate: no finding.
    c = make_pki(("c.other.net",))
    ca = str(Pin.for_certificate(c.intermediate.der()))
    domains = {
        "c.other.net": {"pins": [ca, random_pin()]},
        "d.example.org": {"pins": [ca, random_pin()]},
    }
    assert not _cp(_lint(domains, chains={"c.other.net": _chain("c.other.net", c)}), "CP209")
    # Without chains nothing can be told: no finding.
    assert not _cp(_lint({"a.example.com": {"pins": [leaf_a, leaf_b]}}), "CP209")
