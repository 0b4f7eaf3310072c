"""policy -> FMT -> policy for every format: equal where expressible, warned where not."""

from __future__ import annotations

import base64
import os
import plistlib
from typing import Any

import pytest

from _support.pki import PKI, make_pki
from certpin import Policy
from certpin.formats import FORMATS, ExportOptions, FormatError, ImportOptions


def _pin() -> str:
    return "sha256/" + base64.b64encode(os.urandom(32)).decode()


def _policy(domains: dict[str, Any], version: int | None = 12) -> Policy:
    doc: dict[str, Any] = {"domains": domains}
    if version is not None:
        doc["version"] = version
    return Policy.from_dict(doc, source="pins.toml")


def _roundtrip(fmt: str, policy: Policy, **import_options: Any) -> tuple[Policy, tuple, tuple]:
    exported = FORMATS[fmt].export(policy, ExportOptions())
    imported = FORMATS[fmt].import_(
        exported.text.encode(), f"exported.{fmt}", ImportOptions(**import_options)
    )
    return imported.policy, exported.warnings, imported.warnings


def _expressible(fmt: str) -> Policy:
    """A policy using only what `fmt` expresses exactly, in the form its importer writes."""
    a, b, c, d = _pin(), _pin(), _pin(), _pin()
    full = {
        "api.example.com": {
            "pins": [a, b],
            "expires": "2030-06-01",
            "report_uris": ["https://reports.example.com/pin"],
        },
        "static.example.com": {"pins": [c, d], "include_subdomains": True},
        "beta.example.com": {"pins": [a, c], "enforce": False},
    }
    if fmt in ("android-nsc",):
        del full["api.example.com"]["report_uris"]
        del full["beta.example.com"]
    if fmt == "hpkp":
        del full["api.example.com"]["expires"]
    if fmt == "ats-plist":
        full = {
            "api.example.com": {"leaf_pins": [a, b], "ca_pins": [c, d]},
            # NSIncludesSubdomains covers one label below: the host plus *.host.
            "static.example.com": {"ca_pins": [c, d]},
            "*.static.example.com": {"ca_pins": [c, d]},
        }
    if fmt.startswith("okhttp"):
        full = {
            "api.example.com": {"pins": [a, b]},
            "*.cdn.example.com": {"pins": [c, d]},
            "**.static.example.com": {"pins": [a, d]},
        }
    if fmt == "curl":
        full = {
            "api.example.com": {"leaf_pins": [a, b]},
            "www.static.example.com": {"leaf_pins": [c, d]},
        }
    return _policy(full)


TEXT_FORMATS = [name for name in FORMATS if name != "mobileconfig"]


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_expressible_policy_round_trips_without_warnings(fmt: str) -> None:
    policy = _expressible(fmt)
    back, export_warnings, import_warnings = _roundtrip(fmt, policy)
    if fmt == "trustkit-android":
        # Expressed exactly, but the OS enforces <pin-set> from Android 7 on: always said.
        assert len(export_warnings) == 1 and "Android 7" in export_warnings[0]
    else:
        assert export_warnings == ()
    assert import_warnings == ()
    assert back == policy
    assert back.version == 12


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_changed_pin_changes_the_round_trip(fmt: str) -> None:
    """The twin: the round trip carries the pins themselves, not a constant."""
    policy = _expressible(fmt)
    back, _, _ = _roundtrip(fmt, policy)
    other, _, _ = _roundtrip(fmt, _expressible(fmt))
    assert back != other


def test_plist_exports_parse_with_plistlib() -> None:
    policy = _expressible("trustkit-ios")
    doc = plistlib.loads(FORMATS["trustkit-ios"].export(policy, ExportOptions()).text.encode())
    domain = doc["TSKConfiguration"]["TSKPinnedDomains"]["api.example.com"]
    assert domain["TSKPublicKeyHashes"] == [
        p.base64 for p in policy.domains["api.example.com"].pins
    ]
    assert domain["TSKExpirationDate"] == "2030-06-01"
    assert domain["TSKDisableDefaultReportUri"] is True
    assert domain["TSKEnforcePinning"] is True
    assert (
        doc["TSKConfiguration"]["TSKPinnedDomains"]["beta.example.com"]["TSKEnforcePinning"]
        is False
    )
    ats = plistlib.loads(
        FORMATS["ats-plist"].export(_expressible("ats-plist"), ExportOptions()).text.encode()
    )
    pinned = ats["NSAppTransportSecurity"]["NSPinnedDomains"]
    assert pinned["static.example.com"]["NSIncludesSubdomains"] is True
    assert set(pinned["api.example.com"]) == {
        "NSIncludesSubdomains",
        "NSPinnedCAIdentities",
        "NSPinnedLeafIdentities",
    }
    assert all(
        set(item) == {"SPKI-SHA256-BASE64"}
        for item in pinned["static.example.com"]["NSPinnedCAIdentities"]
    )


def test_binary_plist_imports_too() -> None:
    policy = _expressible("ats-plist")
    text = FORMATS["ats-plist"].export(policy, ExportOptions()).text
    binary = plistlib.dumps(plistlib.loads(text.encode()), fmt=plistlib.FMT_BINARY)
    back = FORMATS["ats-plist"].import_(binary, "Info.plist", ImportOptions()).policy
    assert back.domains == policy.domains


# -- what cannot be expressed is reported -----------------------------------------------------


def _lossy() -> Policy:
    a, b, c, d = _pin(), _pin(), _pin(), _pin()
    return _policy(
        {
            "api.example.com": {
                "pins": [a, b],
                "leaf_pins": [c, d],
                "expires": "2030-01-01T12:00:00Z",
            },
            "*.cdn.example.com": {"pins": [a, b]},
            "quiet.example.com": {
                "pins": [a, b],
                "enforce": False,
                "report_uris": ["https://r.example/"],
            },
            "cert.example.com": {
                "pins": [a, "cert-sha256/" + base64.b64encode(os.urandom(32)).decode()],
                "allow_single_pin": True,
            },
        }
    )


LOSSES = {
    "android-nsc": [
        "leaf_pins",
        "one-label wildcard",
        "report-only",
        "rounded down",
        "cert-sha256",
    ],
    "trustkit-android": ["leaf_pins", "one-label wildcard", "Android 7", "rounded down"],
    "trustkit-ios": ["leaf_pins", "one-label wildcard", "rounded down", "fewer than 2 pins"],
    "ats-plist": [
        "`pins` exported as NSPinnedCAIdentities",
        "report-only",
        "never expire",
        "one-label",
    ],
    "okhttp-kotlin": ["leaf_pins", "report-only", "never expire"],
    "okhttp-java": ["leaf_pins", "report-only", "never expire"],
    "curl": ["leaf pins", "host patterns", "report-only", "never expire"],
    "hpkp": ["leaf_pins", "one-label wildcard", "max-age"],
}


@pytest.mark.parametrize("fmt", sorted(LOSSES))
def test_what_cannot_be_expressed_is_warned(fmt: str) -> None:
    result = FORMATS[fmt].export(_lossy(), ExportOptions())
    joined = "\n".join(result.warnings)
    for expected in LOSSES[fmt]:
        assert expected in joined, (expected, result.warnings)


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_deny_unpinned_hosts_is_warned(fmt: str) -> None:
    policy = Policy.from_dict(
        {"unpinned_hosts": "deny", "domains": {"a.example.com": {"leaf_pins": [_pin(), _pin()]}}}
    )
    result = FORMATS[fmt].export(policy, ExportOptions())
    assert any('unpinned_hosts = "deny"' in w for w in result.warnings)


def test_any_label_wildcard_is_exact_in_host_formats_but_one_label_is_wider() -> None:
    a, b = _pin(), _pin()
    exact = FORMATS["android-nsc"].export(
        _policy({"**.example.com": {"pins": [a, b]}}), ExportOptions()
    )
    assert exact.warnings == ()
    assert '<domain includeSubdomains="true">example.com</domain>' in exact.text
    wider = FORMATS["android-nsc"].export(
        _policy({"*.example.com": {"pins": [a, b]}}), ExportOptions()
    )
    assert len(wider.warnings) == 1 and "wider" in wider.warnings[0]


def test_two_rules_on_one_host_keep_the_more_specific_and_warn() -> None:
    a, b, c, d = _pin(), _pin(), _pin(), _pin()
    policy = _policy({"*.example.com": {"pins": [a, b]}, "example.com": {"pins": [c, d]}})
    result = FORMATS["trustkit-ios"].export(policy, ExportOptions())
    doc = plistlib.loads(result.text.encode())
    assert doc["TSKConfiguration"]["TSKPinnedDomains"]["example.com"]["TSKPublicKeyHashes"] == [
        Policy.from_dict({"domains": {"x.example": {"pins": [c, d]}}})
        .domains["x.example"]
        .pins[0]
        .base64,
        Policy.from_dict({"domains": {"x.example": {"pins": [c, d]}}})
        .domains["x.example"]
        .pins[1]
        .base64,
    ]
    assert any("already taken" in w for w in result.warnings)


def test_curl_ca_pins_are_left_out_with_a_warning() -> None:
    a, b, c, d = _pin(), _pin(), _pin(), _pin()
    result = FORMATS["curl"].export(
        _policy({"api.example.com": {"leaf_pins": [a, b], "ca_pins": [c, d]}}), ExportOptions()
    )
    assert c.removeprefix("sha256/") not in result.text
    assert a.removeprefix("sha256/") in result.text
    assert any("ca_pins left out" in w for w in result.warnings)


def test_hpkp_output_is_marked_deprecated() -> None:
    result = FORMATS["hpkp"].export(_expressible("hpkp"), ExportOptions())
    assert "DEPRECATED" in result.text
    assert "Public-Key-Pins-Report-Only: " in result.text  # the enforce = false rule


def test_import_without_backup_pin_marks_allow_single_pin() -> None:
    xml = (
        b"<network-security-config><domain-config><domain>a.example.com</domain>"
        b'<pin-set><pin digest="SHA-256">' + base64.b64encode(os.urandom(32)) + b"</pin>"
        b"</pin-set></domain-config></network-security-config>"
    )
    result = FORMATS["android-nsc"].import_(xml, "nsc.xml", ImportOptions())
    assert result.policy.domains["a.example.com"].allow_single_pin is True
    assert any("allow_single_pin" in w for w in result.warnings)


# -- mobileconfig -------------------------------------------------------------------------------


@pytest.fixture
def pinned_pki() -> tuple[PKI, Policy]:
    pki = make_pki()
    policy = _policy(
        {
            "localhost": {
                "pins": [],
                "ca_pins": [
                    str(_spki(pki.root.der())),
                    str(_spki(pki.intermediate.der())),
                ],
            }
        }
    )
    return pki, policy


def _spki(der: bytes) -> str:
    from certpin import Pin

    return str(Pin.for_certificate(der))


def test_mobileconfig_carries_the_pinned_cas_with_stable_uuids(
    pinned_pki: tuple[PKI, Policy],
) -> None:
    pki, policy = pinned_pki
    options = ExportOptions(certs=(pki.root.der(), pki.intermediate.der()))
    first = FORMATS["mobileconfig"].export(policy, options)
    again = FORMATS["mobileconfig"].export(policy, options)
    assert first.text == again.text  # stable UUIDs: byte-identical re-export
    assert first.warnings == ()
    doc = plistlib.loads(first.text.encode())
    # The profile's PayloadVersion is the policy version, and the import reads it back.
    assert doc["PayloadType"] == "Configuration" and doc["PayloadVersion"] == 12
    types = [(p["PayloadType"], p["PayloadContent"]) for p in doc["PayloadContent"]]
    assert types == [
        ("com.apple.security.root", pki.root.der()),
        ("com.apple.security.pkcs1", pki.intermediate.der()),
    ]
    uuids = {p["PayloadUUID"] for p in doc["PayloadContent"]} | {doc["PayloadUUID"]}
    assert len(uuids) == 3
    back = FORMATS["mobileconfig"].import_(
        first.text.encode(), "anchors.mobileconfig", ImportOptions(domain="localhost")
    )
    assert back.policy.domains["localhost"].ca_pins == policy.domains["localhost"].ca_pins
    assert back.policy.version == 12
    unversioned = Policy.from_dict({"domains": policy.to_dict()["domains"]})
    doc = plistlib.loads(FORMATS["mobileconfig"].export(unversioned, options).text.encode())
    assert doc["PayloadVersion"] == 1  # a profile needs one; 1 for a policy without a version


def test_mobileconfig_import_refuses_a_bad_payload_version(
    pinned_pki: tuple[PKI, Policy],
) -> None:
    pki, policy = pinned_pki
    text = FORMATS["mobileconfig"].export(policy, ExportOptions(certs=(pki.root.der(),))).text
    bad = text.replace("<integer>12</integer>", "<string>12</string>")
    assert bad != text
    with pytest.raises(FormatError, match="PayloadVersion: must be a non-negative integer"):
        FORMATS["mobileconfig"].import_(bad.encode(), "a.mobileconfig", ImportOptions("localhost"))


def test_mobileconfig_warns_about_a_pins_entry_without_a_cert(
    pinned_pki: tuple[PKI, Policy],
) -> None:
    # A CA pinned under `pins` (any position) with no --cert is reported, not dropped silently.
    pki, _policy = pinned_pki
    root, intermediate = _spki(pki.root.der()), _spki(pki.intermediate.der())
    policy = Policy.from_dict({"domains": {"localhost": {"pins": [root, intermediate]}}})
    full = FORMATS["mobileconfig"].export(
        policy, ExportOptions(certs=(pki.root.der(), pki.intermediate.der()))
    )
    assert full.warnings == ()
    partial = FORMATS["mobileconfig"].export(policy, ExportOptions(certs=(pki.root.der(),)))
    assert partial.warnings == (
        f"localhost: pin (in `pins`) {intermediate} has no --cert: if it names a CA, its "
        "certificate is not in the profile",
    )


def test_mobileconfig_refuses_an_unpinned_cert_and_warns_about_missing_ones(
    pinned_pki: tuple[PKI, Policy],
) -> None:
    pki, policy = pinned_pki
    partial = FORMATS["mobileconfig"].export(policy, ExportOptions(certs=(pki.root.der(),)))
    assert any("has no --cert" in w for w in partial.warnings)
    other = make_pki(root_name="Other Root")
    with pytest.raises(FormatError, match="not pinned by the policy"):
        FORMATS["mobileconfig"].export(policy, ExportOptions(certs=(other.root.der(),)))
    with pytest.raises(FormatError, match="not a CA certificate"):
        FORMATS["mobileconfig"].export(policy, ExportOptions(certs=(pki.leaf.der(),)))
    with pytest.raises(FormatError, match="needs the pinned CA certificates"):
        FORMATS["mobileconfig"].export(policy, ExportOptions())


def test_mobileconfig_import_needs_a_domain(pinned_pki: tuple[PKI, Policy]) -> None:
    pki, policy = pinned_pki
    text = FORMATS["mobileconfig"].export(policy, ExportOptions(certs=(pki.root.der(),))).text
    with pytest.raises(FormatError, match="pass --domain HOST"):
        FORMATS["mobileconfig"].import_(text.encode(), "a.mobileconfig", ImportOptions())
