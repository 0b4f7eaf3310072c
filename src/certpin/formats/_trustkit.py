"""TrustKit for iOS/macOS: the ``TSKConfiguration`` dictionary as a property list.

The key strings are those behind TrustKit's ``kTSK…`` constants (TSKTrustKitConfig.m)::

    kTSKPinnedDomains             "TSKPinnedDomains"
    kTSKPublicKeyHashes           "TSKPublicKeyHashes"      base64 SPKI SHA-256, any chain position
    kTSKIncludeSubdomains         "TSKIncludeSubdomains"
    kTSKEnforcePinning            "TSKEnforcePinning"       false = report-only (exact)
    kTSKReportUris                "TSKReportUris"
    kTSKExpirationDate            "TSKExpirationDate"       "yyyy-MM-dd", UTC
    kTSKDisableDefaultReportUri   "TSKDisableDefaultReportUri"   always true on export
    kTSKExcludeSubdomainFromParentPolicy  "kSKExcludeSubdomainFromParentPolicy" (sic, upstream)

The export is ``{"TSKConfiguration": {"TSKPinnedDomains": {...}}}``, ready to merge into an
Info.plist; the import reads that, or the bare TSKConfiguration dictionary.
"""

from __future__ import annotations

from typing import Any

from certpin.core.policy import Policy
from certpin.formats import _common as common
from certpin.formats._structured import expect, label, load_plist

FMT = "TrustKit"
#: The import size cap: an app's whole Info.plist, where TSKConfiguration usually lives.
MAX_BYTES = 1024 * 1024
_EXCLUDE = "kSKExcludeSubdomainFromParentPolicy"
_DOMAIN_KEYS = frozenset(
    {
        "TSKPublicKeyHashes",
        "TSKIncludeSubdomains",
        "TSKEnforcePinning",
        "TSKReportUris",
        "TSKExpirationDate",
        "TSKDisableDefaultReportUri",
        "TSKPublicKeyAlgorithms",
        _EXCLUDE,
    }
)


def export_trustkit_ios(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    notes = common.Notes()
    common.policy_notes(policy, notes, FMT)
    pinned: dict[str, Any] = {}
    for entry in common.host_entries(policy, notes, FMT):
        rule = entry.rule
        pins = common.any_position_pins(rule, notes, FMT)
        if not pins:
            notes.warn(rule.pattern, f"left out: no pin {FMT} can express")
            continue
        if len(pins) < 2:
            notes.warn(rule.pattern, "TrustKit refuses a domain with fewer than 2 pins at start-up")
        body: dict[str, Any] = {
            "TSKPublicKeyHashes": [p.base64 for p in pins],
            "TSKIncludeSubdomains": entry.include_subdomains,
            "TSKEnforcePinning": rule.enforce,
            "TSKDisableDefaultReportUri": True,
        }
        if rule.report_uris:
            body["TSKReportUris"] = [
                common.checked_uri(u, policy, rule, FMT) for u in rule.report_uris
            ]
        expires = common.expiry_date(rule, notes, FMT)
        if expires:
            body["TSKExpirationDate"] = expires
        pinned[entry.host] = body
    doc = {"TSKConfiguration": {"TSKPinnedDomains": pinned}}
    return notes.result(common.dump_plist(doc, common.header_lines(policy, FMT)))


def import_trustkit_ios(
    data: bytes, source: str, options: common.ImportOptions
) -> common.ImportResult:
    common.check_size(data, source, MAX_BYTES)
    root = expect(load_plist(data, source), dict, source, "the top level")
    loc = "TSKPinnedDomains"
    if "TSKConfiguration" in root:
        root = expect(root["TSKConfiguration"], dict, source, "TSKConfiguration")
        loc = "TSKConfiguration.TSKPinnedDomains"
    if "TSKPinnedDomains" not in root:
        raise common.FormatError("no TSKPinnedDomains dictionary found", source=source)
    notes = common.Notes()
    ignore = "TSKIgnorePinningForUserDefinedTrustAnchors"
    prefix = loc.removesuffix("TSKPinnedDomains")
    if expect(root.get(ignore, False), bool, source, prefix + ignore):
        notes.warn(
            source,
            "TSKIgnorePinningForUserDefinedTrustAnchors not imported: certpin never skips pins "
            "for user-installed CAs",
        )
    pinned = expect(root["TSKPinnedDomains"], dict, source, loc)
    domains: dict[str, dict[str, Any]] = {}
    for host, body in pinned.items():
        # Keys are strings: load_plist refuses any other dictionary key.
        where = f"{loc}.{label(host)}"
        name = common.check_host(host, source, where)
        expect(body, dict, source, where)
        for key in body:
            if key not in _DOMAIN_KEYS:
                raise common.FormatError(
                    f"unknown key {common.clip(key)}", source=source, location=where
                )
        if expect(body.get(_EXCLUDE, False), bool, source, f"{where}.{_EXCLUDE}"):
            notes.warn(
                where,
                "excluded from its parent's policy: certpin has no unpinned exception under a "
                "pinned parent; not imported (the host takes the parent's pins in certpin)",
            )
            continue
        if "TSKPublicKeyAlgorithms" in body:
            notes.warn(where, "TSKPublicKeyAlgorithms ignored (TrustKit no longer uses it)")
        hashes = expect(body.get("TSKPublicKeyHashes"), list, source, f"{where}.TSKPublicKeyHashes")
        pins = []
        for i, value in enumerate(hashes):
            at = f"{where}.TSKPublicKeyHashes[{i}]"
            pins.append(
                str(
                    common.parse_pin("sha256/" + expect(value, str, source, at).strip(), source, at)
                )
            )
        rule: dict[str, Any] = {
            "pins": pins,
            "include_subdomains": expect(
                body.get("TSKIncludeSubdomains", False),
                bool,
                source,
                f"{where}.TSKIncludeSubdomains",
            ),
            # TrustKit enforces by default (kTSKEnforcePinning defaults to YES).
            "enforce": expect(
                body.get("TSKEnforcePinning", True), bool, source, f"{where}.TSKEnforcePinning"
            ),
        }
        uris = expect(body.get("TSKReportUris", []), list, source, f"{where}.TSKReportUris")
        report_uris = []
        for i, uri in enumerate(uris):
            at = f"{where}.TSKReportUris[{i}]"
            report_uris.append(common.check_report_uri(expect(uri, str, source, at), source, at))
        rule["report_uris"] = report_uris
        if "TSKExpirationDate" in body:
            at = f"{where}.TSKExpirationDate"
            rule["expires"] = common.parse_date(
                expect(body["TSKExpirationDate"], str, source, at), source, at
            )
        at = f"{where}.TSKDisableDefaultReportUri"
        if not expect(body.get("TSKDisableDefaultReportUri", False), bool, source, at):
            notes.warn(
                where,
                "TrustKit also sends reports to its vendor's default report URI here; not imported",
            )
        if name in domains:
            raise common.FormatError(f"{name!r} is configured twice", source=source, location=where)
        domains[name] = rule
    return common.build_policy(
        domains, source, notes, common.version_from_comment(data.decode("utf-8", "replace"), source)
    )
