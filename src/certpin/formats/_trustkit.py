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

Subdomains (TrustKit's configuration_utils.m, ``getPinningConfigurationKeyForDomain``): a host
with a key of its own takes that key; otherwise the longest key with TSKIncludeSubdomains that
the host ends with (on a label boundary, same public suffix) applies, at **any depth**. That
is certpin's ``include_subdomains`` and precedence exactly, in both directions. Host names are
compared case-sensitively, so a key with capitals only matches a host written the same way.

What TrustKit refuses at start-up (parse_configuration.m), the import refuses too (exit 2): no
pinned domain, a domain dictionary that is not one, a pin that does not decode to 32 bytes,
fewer than 2 distinct pins on an enforcing domain (1 on a report-only one), a non-string
expiration date, kSKExcludeSubdomainFromParentPolicy beside other keys or without a parent
policy. What TrustKit loads with a meaning of its own is imported with that meaning and a
warning: keys it never reads (misspellings), booleans written as strings or numbers
(``boolValue``), a date it cannot read (no expiry), an expiration date already past (not
enforced on devices today), keys that can never match a host (placeholder pins are
warned about by `build_policy` for every format).
"""

from __future__ import annotations

from typing import Any

from certpin.core.pins import Pin
from certpin.core.policy import Policy, is_report_uri
from certpin.core.times import parse_day
from certpin.formats import _common as common
from certpin.formats._lenient import did_you_mean, expired, platform_pin
from certpin.formats._lenient import unmatchable_domain as _unmatchable
from certpin.formats._structured import describe, expect, label, load_plist_file

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


_TOP_KEYS = (
    "TSKSwizzleNetworkDelegates",
    "TSKPinnedDomains",
    "TSKIgnorePinningForUserDefinedTrustAnchors",
)
_NS_TRUE_START = frozenset("YyTt123456789")


def _ns_bool(value: Any, default: bool, where: str, source: str, notes: common.Notes) -> bool:
    """`value` as TrustKit reads it: ``[value boolValue]`` (NSNumber or NSString); a missing
    key is `default`. Anything without ``boolValue`` makes TrustKit raise at start-up."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        result = value != 0
    elif isinstance(value, str):
        # NSString boolValue: leading whitespace, then an optional sign and zeros are skipped;
        # true on "Y", "y", "T", "t" or a digit 1-9, false otherwise.
        text = value.lstrip(" \t\n\r").lstrip("+-").lstrip("0")
        result = bool(text) and text[0] in _NS_TRUE_START
    else:
        raise common.FormatError(
            f"must be a boolean, got {describe(value)} (TrustKit raises at start-up)",
            source=source,
            location=where,
        )
    notes.warn(
        where,
        f"{describe(value)} instead of a boolean: TrustKit reads it as {'YES' if result else 'NO'}",
    )
    return result


def _config(root: dict[str, Any], source: str) -> tuple[dict[str, Any], str, bool]:
    """(the TSKConfiguration dictionary, its key-path prefix, whether it is the bare form)."""
    if "TSKConfiguration" in root:
        return (
            expect(root["TSKConfiguration"], dict, source, "TSKConfiguration"),
            "TSKConfiguration.",
            False,
        )
    if "TSKPinnedDomains" in root:
        return root, "", True
    hint = next(
        filter(None, (did_you_mean(k, ["TSKConfiguration", "TSKPinnedDomains"]) for k in root)), ""
    )
    raise common.FormatError(
        f"no TSKConfiguration with TSKPinnedDomains found{hint}", source=source
    )


def import_trustkit_ios(
    data: bytes, source: str, options: common.ImportOptions
) -> common.ImportResult:
    notes = common.Notes()
    root = load_plist_file(data, source, MAX_BYTES, notes)
    version = common.version_from_comment(data.decode("utf-8", "replace"), source)
    return import_configuration(root, source, options, notes, version)


def import_configuration(
    root: dict[str, Any],
    source: str,
    options: common.ImportOptions,
    notes: common.Notes,
    version: int | None,
) -> common.ImportResult:
    """Map a TSKConfiguration dictionary (wrapped or bare) already read from a plist, or from
    source code by the trustkit-ios-code importer, the way TrustKit reads it."""
    config, prefix, bare = _config(root, source)
    for key in config:
        if key in _TOP_KEYS or (bare and not key.startswith(("TSK", "kTSK", "kSK"))):
            continue  # the bare form may be a whole Info.plist: only TSK-like keys are odd there
        notes.warn(
            f"{prefix}{label(key)}",
            f"unknown key{did_you_mean(key, _TOP_KEYS)}: TrustKit ignores it",
        )
    if "TSKPinnedDomains" not in config:
        raise common.FormatError(
            "no TSKPinnedDomains: TrustKit raises at start-up ('initialized with no pinned "
            "domains')",
            source=source,
            location=prefix.rstrip(".") or "the top level",
        )
    ignore = "TSKIgnorePinningForUserDefinedTrustAnchors"
    if _ns_bool(config.get(ignore), False, prefix + ignore, source, notes):
        notes.warn(
            prefix + ignore,
            "macOS only (iOS ignores it): TrustKit on macOS skips pins for chains to a "
            "user-installed CA; certpin never skips pins, not imported",
        )
    loc = prefix + "TSKPinnedDomains"
    pinned = expect(config["TSKPinnedDomains"], dict, source, loc)
    if not pinned:
        raise common.FormatError(
            "is empty: TrustKit raises at start-up ('initialized with no pinned domains')",
            source=source,
            location=loc,
        )
    domains: dict[str, dict[str, Any]] = {}
    excluded: list[tuple[str, str]] = []
    for host, body in pinned.items():
        where = f"{loc}.{label(host)}"
        rule = _domain(host, body, where, source, options, notes)
        if rule is None:
            continue
        if rule is _EXCLUDED:
            excluded.append((host, where))
            continue
        name = common.check_host(host, source, where)
        if name in domains:
            raise common.FormatError(f"{name!r} is configured twice", source=source, location=where)
        domains[name] = rule
    for host, where in excluded:
        parents = [
            d for d, r in domains.items() if r["include_subdomains"] and host.endswith("." + d)
        ]
        if not parents:
            raise common.FormatError(
                f"{_EXCLUDE} without a parent domain that includes subdomains: TrustKit raises "
                "at start-up",
                source=source,
                location=where,
            )
        notes.warn(
            where,
            f"excluded from {max(parents, key=len)!r}'s policy: certpin has no unpinned exception "
            "under a pinned parent; not imported (the host takes the parent's pins in certpin)",
        )
    if not domains:
        why = "; ".join(notes.items[-3:]) or "no domain left"
        raise common.FormatError(
            f"no TSKPinnedDomains entry that TrustKit enforces: {common.clip_message(why, 600)}",
            source=source,
        )
    return common.build_policy(domains, source, notes, version)


_EXCLUDED: dict[str, Any] = {}


def _domain(
    host: str,
    body: Any,
    where: str,
    source: str,
    options: common.ImportOptions,
    notes: common.Notes,
) -> dict[str, Any] | None:
    """One TSKPinnedDomains entry as TrustKit reads it: a rule, `_EXCLUDED`, or None (left out,
    warned)."""
    expect(body, dict, source, where)  # anything else makes TrustKit raise
    for key in body:
        if key not in _DOMAIN_KEYS:
            notes.warn(
                f"{where}.{label(key)}",
                f"unknown key{did_you_mean(key, _DOMAIN_KEYS)}: TrustKit ignores it",
            )
    if _ns_bool(body.get(_EXCLUDE), False, f"{where}.{_EXCLUDE}", source, notes):
        if len(body) > 1:
            raise common.FormatError(
                f"{_EXCLUDE} beside other keys: TrustKit raises at start-up",
                source=source,
                location=where,
            )
        return _EXCLUDED
    reason = _unmatchable(host)
    if reason is not None:
        notes.warn(
            where,
            f"left out: this key can never match a host ({reason}), so it is NOT pinned by "
            "TrustKit today",
        )
        return None
    if host != host.lower():
        notes.warn(
            where,
            "TrustKit compares host names case-sensitively: this key matches only a host "
            "written with the same capitals (URLs normally carry lower case)",
        )
    include = _ns_bool(
        body.get("TSKIncludeSubdomains"), False, f"{where}.TSKIncludeSubdomains", source, notes
    )
    # TrustKit enforces by default (kTSKEnforcePinning defaults to YES).
    enforce = _ns_bool(
        body.get("TSKEnforcePinning"), True, f"{where}.TSKEnforcePinning", source, notes
    )
    if "TSKPublicKeyAlgorithms" in body:
        notes.warn(where, "TSKPublicKeyAlgorithms ignored (TrustKit no longer uses it)")
    at = f"{where}.TSKPublicKeyHashes"
    hashes = expect(body.get("TSKPublicKeyHashes", []), list, source, at)
    pins: list[Pin] = []
    for i, value in enumerate(hashes):
        item = f"{at}[{i}]"
        text = expect(value, str, source, item)
        pin = platform_pin(
            text, platform="trustkit", notes=notes, where=item, source=source, location=item
        )
        if pin not in pins:
            pins.append(pin)
    need = 2 if enforce else 1
    if len(pins) < need:
        raise common.FormatError(
            f"{len(pins)} distinct pin(s): TrustKit raises at start-up with fewer than {need} "
            f"on a{'n enforcing' if enforce else ' report-only'} domain",
            source=source,
            location=at,
        )
    rule: dict[str, Any] = {
        "pins": [str(p) for p in pins],
        "include_subdomains": include,
        "enforce": enforce,
    }
    uris = expect(body.get("TSKReportUris", []), list, source, f"{where}.TSKReportUris")
    report_uris = []
    for i, uri in enumerate(uris):
        item = f"{where}.TSKReportUris[{i}]"
        text = expect(uri, str, source, item)
        if is_report_uri(text):
            report_uris.append(text)
        else:
            notes.warn(item, f"report URI {common.clip(text)} is not an http(s) URL: left out")
    rule["report_uris"] = report_uris
    if "TSKExpirationDate" in body:
        item = f"{where}.TSKExpirationDate"
        text = expect(body["TSKExpirationDate"], str, source, item)
        try:
            day = parse_day(text)
        except ValueError:
            notes.warn(
                item,
                f"{common.clip(text)} is not a yyyy-MM-dd date: TrustKit cannot read it, so "
                "these pins never expire; imported without expiry",
            )
        else:
            rule["expires"] = text
            if expired(day, options):
                notes.warn(
                    item,
                    f"expired on {text}: TrustKit no longer enforces these pins, so {host!r} is "
                    "not pinned on devices today",
                )
    at = f"{where}.TSKDisableDefaultReportUri"
    if not _ns_bool(body.get("TSKDisableDefaultReportUri"), False, at, source, notes):
        notes.warn(
            where,
            "TrustKit also sends reports to its vendor's default report URI here; not imported",
        )
    return rule
