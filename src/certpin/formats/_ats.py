"""Apple App Transport Security: ``NSAppTransportSecurity`` -> ``NSPinnedDomains`` (iOS 14+).

Mapping (certpin -> ATS)::

    key "api.example.com"        NSPinnedDomains key, NSIncludesSubdomains = include_subdomains
    key "**.example.com"         "example.com" with NSIncludesSubdomains = true (same meaning)
    key "*.example.com"          "example.com" with NSIncludesSubdomains = true (wider: warned)
    leaf_pins                    NSPinnedLeafIdentities  [{SPKI-SHA256-BASE64: b64}]   (exact)
    ca_pins                      NSPinnedCAIdentities    [{SPKI-SHA256-BASE64: b64}]   (exact)
    pins (any position)          NSPinnedCAIdentities (warned, see below)
    expires, report_uris         not expressible (warned)
    enforce = false              rule left out (warned: ATS has no report-only mode)

ATS, like certpin, requires a match in *each* list given (a leaf identity for the leaf and a CA
identity for a CA of the chain). It has no list "any certificate may match", so certpin's
``pins`` cannot be exported exactly. They go into NSPinnedCAIdentities, because pinning CA keys
is what Apple recommends and what most ``pins`` lists hold; a leaf-key pin among them would then
never match, so every export of ``pins`` is warned about. For an exact export, write leaf keys
under ``leaf_pins`` and CA keys under ``ca_pins``.
"""

from __future__ import annotations

from typing import Any

from certpin.core.policy import Policy
from certpin.formats import _common as common
from certpin.formats._structured import expect, label, load_plist

FMT = "Apple ATS"
#: The import size cap: an app's whole Info.plist, where NSAppTransportSecurity lives.
MAX_BYTES = 1024 * 1024
_KEY = "SPKI-SHA256-BASE64"


def export_ats(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    notes = common.Notes()
    common.policy_notes(policy, notes, FMT)
    pinned: dict[str, Any] = {}
    for entry in common.host_entries(policy, notes, FMT):
        rule = entry.rule
        if common.skip_report_only(rule, notes, FMT):
            continue
        common.no_expiry_note(rule, notes, FMT)
        common.no_report_note(rule, notes, FMT)
        ca = common.sha256_spki(rule.ca_pins + rule.pins, rule.pattern, notes, FMT)
        leaf = common.sha256_spki(rule.leaf_pins, rule.pattern, notes, FMT)
        if rule.pins:
            extra = (
                "; certpin requires those and the ca_pins, ATS any of them" if rule.ca_pins else ""
            )
            notes.warn(
                rule.pattern,
                "ATS has no pin list for any certificate of the chain: `pins` exported as "
                "NSPinnedCAIdentities, so a leaf-key pin among them will never match (move leaf "
                f"keys to leaf_pins and CA keys to ca_pins for an exact export){extra}",
            )
        if not ca and not leaf:
            notes.warn(rule.pattern, f"left out: no pin {FMT} can express")
            continue
        body: dict[str, Any] = {"NSIncludesSubdomains": entry.include_subdomains}
        if ca:
            body["NSPinnedCAIdentities"] = [{_KEY: p.base64} for p in ca]
        if leaf:
            body["NSPinnedLeafIdentities"] = [{_KEY: p.base64} for p in leaf]
        pinned[entry.host] = body
    doc = {"NSAppTransportSecurity": {"NSPinnedDomains": pinned}}
    return notes.result(common.dump_plist(doc, common.header_lines(policy, FMT)))


def import_ats(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    common.check_size(data, source, MAX_BYTES)
    root = expect(load_plist(data, source), dict, source, "the top level")
    if "NSAppTransportSecurity" in root:
        ats = expect(root["NSAppTransportSecurity"], dict, source, "NSAppTransportSecurity")
        loc = "NSAppTransportSecurity.NSPinnedDomains"
    elif "NSPinnedDomains" in root:
        ats, loc = root, "NSPinnedDomains"
    else:
        raise common.FormatError(
            "no NSAppTransportSecurity dictionary with NSPinnedDomains found", source=source
        )
    pinned = expect(ats.get("NSPinnedDomains", {}), dict, source, loc)
    notes = common.Notes()
    domains: dict[str, dict[str, Any]] = {}
    for host, body in pinned.items():
        # Keys are strings: load_plist refuses any other dictionary key.
        where = f"{loc}.{label(host)}"
        name = common.check_host(host, source, where)
        expect(body, dict, source, where)
        for key in body:
            if key not in (
                "NSIncludesSubdomains",
                "NSPinnedCAIdentities",
                "NSPinnedLeafIdentities",
            ):
                raise common.FormatError(
                    f"unknown key {common.clip(key)}", source=source, location=where
                )
        include = expect(
            body.get("NSIncludesSubdomains", False), bool, source, f"{where}.NSIncludesSubdomains"
        )
        rule: dict[str, Any] = {"include_subdomains": include}
        for key, slot in (
            ("NSPinnedLeafIdentities", "leaf_pins"),
            ("NSPinnedCAIdentities", "ca_pins"),
        ):
            items = expect(body.get(key, []), list, source, f"{where}.{key}")
            pins = []
            for i, item in enumerate(items):
                at = f"{where}.{key}[{i}]"
                expect(item, dict, source, at)
                value = expect(item.get(_KEY), str, source, f"{at}.{_KEY}")
                pins.append(str(common.parse_pin("sha256/" + value.strip(), source, at)))
            rule[slot] = pins
        if not rule["leaf_pins"] and not rule["ca_pins"]:
            raise common.FormatError(
                "needs NSPinnedCAIdentities or NSPinnedLeafIdentities",
                source=source,
                location=where,
            )
        if name in domains:
            raise common.FormatError(f"{name!r} is configured twice", source=source, location=where)
        domains[name] = rule
    return common.build_policy(
        domains, source, notes, common.version_from_comment(data.decode("utf-8", "replace"), source)
    )
