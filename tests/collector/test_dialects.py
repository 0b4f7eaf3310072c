"""`normalize_report` field by field: every field of every dialect is type- and length-checked,
and each refusal names the field (the HTTP twin of these is test_ingest's bad-input test)."""

from __future__ import annotations

from typing import Any

import pytest

from _support.pki import PKI
from certpin import Pin
from certpin.collector.dialects import ReportError, normalize_report
from certpin.collector.limits import IngestLimits
from collector._helpers import (
    certpin_report,
    pin_of,
    rfc7469_report,
    trustkit_android_report,
    trustkit_ios_report,
)

STRING_FIELDS = [
    ("noted-hostname", 253),
    ("date-time", 64),
    ("report-id", 128),
    ("certpin-version", 64),
    ("trustkit-version", 64),
    ("known-pins-expiration-date", 64),
    ("effective-expiration-date", 64),
    ("app-bundle-id", None),
    ("app-version", None),
    ("app-platform", None),
    ("app-platform-version", None),
    ("app-vendor-id", None),
    ("app-identifier", None),
    ("verdict-status", 64),
    ("verdict-reason", None),
]


def _refused(body: dict[str, Any], match: str, limits: IngestLimits | None = None) -> None:
    with pytest.raises(ReportError, match=match):
        normalize_report(body, limits or IngestLimits())


def _full(pki: PKI) -> dict[str, Any]:
    """A certpin report carrying every field `normalize_report` reads."""
    return {
        **trustkit_ios_report(pki),
        **certpin_report(pki),
        "known-pins-expiration-date": "2026-01-01",
        "app-identifier": "ident",
    }


@pytest.mark.parametrize(("field", "max_len"), STRING_FIELDS, ids=[f for f, _ in STRING_FIELDS])
def test_every_string_field_is_checked(field: str, max_len: int | None, report_pki: PKI) -> None:
    good = _full(report_pki)
    limits = IngestLimits(max_string=200)
    limit = max_len or limits.max_string
    _refused({**good, field: 7}, rf"field '{field}': expected a string, got a number", limits)
    _refused({**good, field: ["x"]}, rf"field '{field}': expected a string, got an array", limits)
    _refused({**good, field: "a" * (limit + 1)}, rf"field '{field}': longer than {limit}", limits)
    _refused({**good, field: "a\x00b"}, rf"field '{field}': contains a NUL", limits)
    _refused({**good, field: "a\ud800"}, rf"field '{field}': contains an unpaired surrogate")
    # The twin at the limit is accepted: only what is wrong is refused.
    value = "a" * limit
    if field == "date-time":
        value = "2025-01-02T03:04:05+00:00".ljust(limit)
    report = normalize_report({**good, field: value}, limits)
    assert report.dialect == "certpin"
    assert value in report.body or field == "date-time"
    if field not in ("report-id", "certpin-version"):  # required by the certpin dialect
        normalize_report({**good, field: None}, limits)


def test_non_ascii_text_is_kept(report_pki: PKI) -> None:
    body = {**rfc7469_report(report_pki), "verdict-reason": "clé épinglée ✓"}
    assert normalize_report(body, IngestLimits()).verdict_reason == "clé épinglée ✓"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"hostname": 1}, "field 'hostname': expected a string"),
        ({"hostname": "a" * 254}, "field 'hostname': longer than 253"),
        ({"port": 1.5}, "field 'port': expected an integer, got a number"),
        ({"port": False}, "field 'port': expected an integer, got a boolean"),
        ({"port": -1}, r"field 'port': -1 is outside 0\.\.65535"),
        ({"validation-result": 2**31}, "field 'validation-result': 2147483648 is outside"),
        ({"validation-result": "1"}, "field 'validation-result': expected an integer"),
        ({"include-subdomains": 1}, "field 'include-subdomains': expected true or false"),
        ({"enforce-pinning": "true"}, "field 'enforce-pinning': expected true or false"),
        ({"known-pins": "sha256/x"}, "field 'known-pins': expected an array of pin strings"),
        ({"known-pins": [1]}, r"field 'known-pins\[0\]': expected a pin string"),
        ({"known-pins": ["a" * 257]}, r"field 'known-pins\[0\]': expected a pin string"),
        ({"known-pins": ["sha256/AAAA"] * 3}, r"field 'known-pins\[0\]': "),
        ({"served-certificate-chain": [1]}, r"'served-certificate-chain\[0\]': expected a PEM"),
        (
            {"served-certificate-chain": ["-" * (16 * 1024 + 1)]},
            r"'served-certificate-chain\[0\]': PEM longer than 16384",
        ),
        ({"validated-certificate-chain": {}}, "expected an array of PEM certificates"),
    ],
)
def test_each_bad_field_is_named(changes: dict[str, Any], match: str, report_pki: PKI) -> None:
    _refused({**rfc7469_report(report_pki), **changes}, match)


def test_too_many_pins_is_refused(report_pki: PKI) -> None:
    good = rfc7469_report(report_pki)
    pins = good["known-pins"]
    limits = IngestLimits(max_pins=len(pins))
    normalize_report(good, limits)
    _refused({**good, "known-pins": [*pins, pins[0]]}, "more than 2 entries", limits)


def test_the_second_chain_entry_is_named(report_pki: PKI) -> None:
    good = rfc7469_report(report_pki)
    chain = good["validated-certificate-chain"]
    _refused(
        {**good, "validated-certificate-chain": [chain[0], "not a pem"]},
        r"'validated-certificate-chain\[1\]': not a single PEM",
    )


def test_pins_are_canonical_and_the_unexpected_key_is_the_leafs(report_pki: PKI) -> None:
    good = rfc7469_report(report_pki)
    leaf = report_pki.leaf.chain_der()[0]
    report = normalize_report(good, IngestLimits())
    assert report.known_pins == tuple(str(Pin.parse(p)) for p in good["known-pins"])
    assert all(p.startswith("sha256/") for p in report.known_pins)
    assert report.unexpected_pin == str(Pin.for_certificate(leaf))
    # The failing twin of "unexpected": the leaf's own pin among the known ones.
    matched = normalize_report(
        {**good, "known-pins": [*good["known-pins"][:1], f'pin-sha256="{pin_of(leaf)}"']},
        IngestLimits(),
    )
    assert matched.unexpected_pin is None


@pytest.mark.parametrize(
    "make",
    [certpin_report, trustkit_ios_report, trustkit_android_report],
    ids=["certpin", "trustkit-ios", "trustkit-android"],
)
def test_app_vendor_id_falls_back_to_app_identifier(make: Any, report_pki: PKI) -> None:
    body = {**make(report_pki), "app-identifier": "ident"}
    body.pop("app-vendor-id", None)
    assert normalize_report(body, IngestLimits()).app_vendor_id == "ident"
    assert (
        normalize_report({**body, "app-vendor-id": "vendor"}, IngestLimits()).app_vendor_id
        == "vendor"
    )
