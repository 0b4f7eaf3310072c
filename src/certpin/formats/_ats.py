"""Apple App Transport Security: ``NSAppTransportSecurity`` -> ``NSPinnedDomains`` (iOS 14+).

What iOS does with the keys, from Security's SecPolicy.c (``parseNSPinnedDomains``, which
``SecPolicyCreateSSL`` calls for every server trust evaluation) and Apple's documentation:

* A key matches the host case-insensitively, after the host's trailing dot is stripped (so a
  key *with* a trailing dot never matches). With ``NSIncludesSubdomains`` = ``<true/>`` (only a
  real boolean true counts) it also matches a host whose parent (the host minus its first
  label) equals the key: **one** extra label, ``math.example.com`` yes,
  ``advanced.math.example.com`` no.
* Every matching key contributes: the identities of the host's own key and of its parent's
  key are combined, per list.
* A list that is present is enforced even when nothing usable is in it (iOS then refuses every
  connection); items that are not dictionaries, lack ``SPKI-SHA256-BASE64`` or are not base64
  are skipped; nothing in NSPinnedDomains makes iOS reject the Info.plist.

Mapping (certpin -> ATS)::

    key "api.example.com"        NSPinnedDomains key, NSIncludesSubdomains = false
    "example.com" + "*.example.com" with the same pins
                                 "example.com" with NSIncludesSubdomains = true (exact)
    key "*.example.com" alone    "example.com" with NSIncludesSubdomains = true (also pins
                                 example.com itself: wider, warned)
    include_subdomains = true    NSIncludesSubdomains = true: names two or more labels below
    key "**.example.com"         are NOT pinned by iOS (warned)
    leaf_pins                    NSPinnedLeafIdentities  [{SPKI-SHA256-BASE64: b64}]   (exact)
    ca_pins                      NSPinnedCAIdentities    [{SPKI-SHA256-BASE64: b64}]   (exact)
    pins (any position)          NSPinnedCAIdentities (warned, see below)
    expires, report_uris         not expressible (warned)
    enforce = false              rule left out (warned: ATS has no report-only mode)

The import maps back: a key with NSIncludesSubdomains becomes the host plus ``*.host`` with the
same pins; a host whose parent key includes subdomains gets the pins of both.

ATS, like certpin, requires a match in *each* list given (a leaf identity for the leaf and a CA
identity for a CA of the chain). It has no list "any certificate may match", so certpin's
``pins`` cannot be exported exactly. They go into NSPinnedCAIdentities, because pinning CA keys
is what Apple recommends and what most ``pins`` lists hold; a leaf-key pin among them would then
never match, so every export of ``pins`` is warned about. For an exact export, write leaf keys
under ``leaf_pins`` and CA keys under ``ca_pins``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from certpin.core.hosts import HostPattern, PatternKind, is_public_suffix
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.formats import _common as common
from certpin.formats._lenient import did_you_mean, platform_pin
from certpin.formats._lenient import unmatchable_domain as _unmatchable
from certpin.formats._structured import describe, label, load_plist_file

FMT = "Apple ATS"
#: The import size cap: an app's whole Info.plist, where NSAppTransportSecurity lives.
MAX_BYTES = 1024 * 1024
_KEY = "SPKI-SHA256-BASE64"
_INCLUDE = "NSIncludesSubdomains"
_SLOTS = (("NSPinnedLeafIdentities", "leaf_pins"), ("NSPinnedCAIdentities", "ca_pins"))
_DOMAIN_KEYS = (_INCLUDE, "NSPinnedCAIdentities", "NSPinnedLeafIdentities")
#: The keys Apple documents directly under NSAppTransportSecurity.
_ATS_KEYS = (
    "NSAllowsArbitraryLoads",
    "NSAllowsArbitraryLoadsForMedia",
    "NSAllowsArbitraryLoadsInWebContent",
    "NSAllowsLocalNetworking",
    "NSExceptionDomains",
    "NSPinnedDomains",
)


# -- export ---------------------------------------------------------------------------------------


@dataclass
class _Key:
    """One NSPinnedDomains key being built from the rules of one base host."""

    host: str
    include: bool
    ca: tuple[Pin, ...]
    leaf: tuple[Pin, ...]
    rules: list[DomainRule]


def _body(rule: DomainRule, notes: common.Notes) -> tuple[tuple[Pin, ...], tuple[Pin, ...]]:
    ca = common.sha256_spki(rule.ca_pins + rule.pins, rule.pattern, notes, FMT)
    leaf = common.sha256_spki(rule.leaf_pins, rule.pattern, notes, FMT)
    if rule.pins:
        extra = "; certpin requires those and the ca_pins, ATS any of them" if rule.ca_pins else ""
        notes.warn(
            rule.pattern,
            "ATS has no pin list for any certificate of the chain: `pins` exported as "
            "NSPinnedCAIdentities, so a leaf-key pin among them will never match (move leaf "
            f"keys to leaf_pins and CA keys to ca_pins for an exact export){extra}",
        )
    return tuple(ca), tuple(leaf)


_ORDER = {PatternKind.EXACT: 0, PatternKind.ANY_LABELS: 1, PatternKind.ONE_LABEL: 2}


def _keys(policy: Policy, notes: common.Notes) -> list[_Key]:
    """The NSPinnedDomains keys for `policy`: the rules of one base host share one key."""
    groups: dict[str, list[tuple[HostPattern, DomainRule]]] = {}
    for rule in policy.domains.values():
        if common.skip_report_only(rule, notes, FMT):
            continue
        common.no_expiry_note(rule, notes, FMT)
        common.no_report_note(rule, notes, FMT)
        pattern = HostPattern.parse(rule.pattern)
        groups.setdefault(pattern.base, []).append((pattern, rule))
    keys: list[_Key] = []
    for base, members in groups.items():
        members.sort(key=lambda m: _ORDER[m[0].kind])
        key: _Key | None = None
        deeper = False  # does a rule cover names two or more labels below `base`?
        for pattern, rule in members:
            ca, leaf = _body(rule, notes)
            if not ca and not leaf:
                common.no_pins_note(rule, notes, FMT)
                continue
            if key is None:
                include = pattern.kind is not PatternKind.EXACT or rule.include_subdomains
                key = _Key(base, include, ca, leaf, [rule])
            elif (ca, leaf) == (key.ca, key.leaf):
                key.include = True  # the same pins: one key with NSIncludesSubdomains
                key.rules.append(rule)
            else:
                notes.warn(
                    rule.pattern,
                    f"left out: {FMT} keys are host names, and {base!r} is already taken by "
                    f"the more specific rule {key.rules[0].pattern!r} with other pins",
                )
                continue
            deeper = deeper or pattern.kind is PatternKind.ANY_LABELS or rule.include_subdomains
        if key is None:
            continue
        kinds = {HostPattern.parse(r.pattern).kind for r in key.rules}
        if kinds == {PatternKind.ONE_LABEL}:
            notes.warn(
                key.rules[0].pattern,
                f"{FMT} has no one-label wildcard of its own: exported as {base!r} with "
                f"NSIncludesSubdomains, which also pins {base!r} itself (wider)",
            )
        if deeper:
            where = next(
                r.pattern
                for r in key.rules
                if r.include_subdomains
                or HostPattern.parse(r.pattern).kind is not PatternKind.EXACT
            )
            notes.warn(
                where,
                f"NSIncludesSubdomains covers one label below {base!r} only: a.b.{base} and "
                "deeper are NOT pinned by iOS",
            )
        keys.append(key)
    _warn_combined(keys, notes)
    return keys


def _warn_combined(keys: list[_Key], notes: common.Notes) -> None:
    """iOS combines a host's pins with its parent key's when the parent includes subdomains."""
    by_host = {k.host: k for k in keys}
    for key in keys:
        parent = by_host.get(key.host.partition(".")[2])
        if parent is None or not parent.include:
            continue
        # Per list, iOS checks the union of both keys' identities.
        if set(parent.ca) <= set(key.ca) and set(parent.leaf) <= set(key.leaf):
            continue
        notes.warn(
            key.rules[0].pattern,
            f"iOS also applies the pins of {parent.host!r} to {key.host!r} (its "
            "NSIncludesSubdomains covers it, and ATS combines the identities of every matching "
            f"key): on iOS {key.host!r} accepts either key's pins in each list",
        )


def export_ats(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    notes = common.Notes()
    common.policy_notes(policy, notes, FMT)
    pinned: dict[str, Any] = {}
    for key in _keys(policy, notes):
        body: dict[str, Any] = {_INCLUDE: key.include}
        if key.ca:
            body["NSPinnedCAIdentities"] = [{_KEY: p.base64} for p in key.ca]
        if key.leaf:
            body["NSPinnedLeafIdentities"] = [{_KEY: p.base64} for p in key.leaf]
        pinned[key.host] = body
    doc = {"NSAppTransportSecurity": {"NSPinnedDomains": pinned}}
    return notes.result(common.dump_plist(doc, common.header_lines(policy, FMT)))


# -- import ---------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One NSPinnedDomains key as iOS reads it: each list None when the key is absent."""

    name: str
    where: str
    include: bool
    lists: dict[str, list[Pin] | None]


def _find_pinned(root: dict[str, Any], source: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The NSPinnedDomains dictionary and its key path (whole Info.plist or a fragment)."""
    if "NSAppTransportSecurity" in root:
        ats = root["NSAppTransportSecurity"]
        if not isinstance(ats, dict):
            raise common.FormatError(
                f"must be a dictionary, got {describe(ats)}: iOS pins nothing from this file",
                source=source,
                location="NSAppTransportSecurity",
            )
        loc = "NSAppTransportSecurity.NSPinnedDomains"
    elif "NSPinnedDomains" in root:
        ats, loc = root, "NSPinnedDomains"  # a fragment: the ATS dictionary alone
    else:
        hint = next(filter(None, (did_you_mean(k, ["NSAppTransportSecurity"]) for k in root)), "")
        raise common.FormatError(
            f"no NSAppTransportSecurity dictionary with NSPinnedDomains found{hint}", source=source
        )
    if "NSPinnedDomains" not in ats:
        hint = next(filter(None, (did_you_mean(k, ["NSPinnedDomains"]) for k in ats)), "")
        misplaced = [
            f"NSAppTransportSecurity.NSExceptionDomains.{label(d)}.NSPinnedDomains"
            for d, body in (ats.get("NSExceptionDomains") or {}).items()
            if isinstance(body, dict) and "NSPinnedDomains" in body
        ][:1]
        where = (
            f" (found at {misplaced[0]}: iOS reads NSPinnedDomains only directly under "
            "NSAppTransportSecurity)"
            if misplaced
            else ""
        )
        raise common.FormatError(
            f"no NSPinnedDomains in NSAppTransportSecurity{hint}{where}: iOS pins nothing",
            source=source,
            location="NSAppTransportSecurity",
        )
    pinned = ats["NSPinnedDomains"]
    if not isinstance(pinned, dict):
        raise common.FormatError(
            f"must be a dictionary, got {describe(pinned)}: iOS pins nothing from this file",
            source=source,
            location=loc,
        )
    return pinned, loc, ats


def _identities(items: Any, where: str, host: str, source: str, notes: common.Notes) -> list[Pin]:
    """The pins iOS reads from one identity list (items it skips are warned about)."""
    if not isinstance(items, list):
        notes.warn(where, f"is {describe(items)}, not an array: iOS reads no identity from it")
        return []
    pins: list[Pin] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            notes.warn(at, f"is {describe(item)}, not a dictionary: iOS skips it")
            continue
        for key in item:
            if key != _KEY:
                notes.warn(
                    f"{at}.{label(key)}", f"unknown key{did_you_mean(key, [_KEY])}: iOS ignores it"
                )
        value = item.get(_KEY)
        if not isinstance(value, str):
            what = "missing" if value is None else f"{describe(value)}, not a string"
            notes.warn(at, f"{_KEY} is {what}: iOS skips this identity")
            continue
        try:
            pin = platform_pin(
                value, platform="apple", notes=notes, where=at, source=source, location=at
            )
        except common.FormatError as exc:
            notes.warn(at, f"{exc.problem}: iOS skips this identity, it pins nothing")
            continue
        if pin not in pins:
            pins.append(pin)
    return pins


def _is_ip_range(key: str) -> bool:
    """Whether `key` is CIDR notation (``10.0.0.0/8``, ``2001:db8::/32``)."""
    if key.count("/") != 1 or len(key) > 64:
        return False
    try:
        ipaddress.ip_network(key, strict=False)
    except ValueError:
        return False
    return True


def _read_entry(host: str, body: Any, loc: str, source: str, notes: common.Notes) -> _Entry | None:
    where = f"{loc}.{label(host)}"
    if not isinstance(body, dict):
        notes.warn(
            where, f"is {describe(body)}, not a dictionary: iOS ignores it, {host!r} is NOT pinned"
        )
        return None
    for key in body:
        if key not in _DOMAIN_KEYS:
            notes.warn(
                f"{where}.{label(key)}",
                f"unknown key{did_you_mean(key, _DOMAIN_KEYS)}: iOS ignores it",
            )
    if _is_ip_range(host):
        notes.warn(
            where,
            f"left out: {host!r} is an IP range: ATS pins domain names only (Security's "
            "parseNSPinnedDomains compares each key with the host as text; ranges are an "
            f"NSExceptionDomains feature of iOS 17), so {host} is NOT pinned on iOS",
        )
        return None
    reason = _unmatchable(host)
    name = None
    if reason is None:
        try:
            name = common.check_host(host, source, where)
        except common.FormatError as exc:
            reason = exc.problem
    if name is None:
        notes.warn(
            where,
            f"left out: this key can never match a host ({reason}), so it is NOT pinned on "
            "iOS today",
        )
        return None
    include_value = body.get(_INCLUDE, False)
    include = include_value is True
    if not isinstance(include_value, bool):
        notes.warn(
            f"{where}.{_INCLUDE}",
            f"is {describe(include_value)}, not a boolean: iOS honours only <true/>, so "
            "subdomains are NOT pinned",
        )
    lists: dict[str, list[Pin] | None] = {}
    for key, slot in _SLOTS:
        lists[slot] = None
        if key in body:
            lists[slot] = _identities(body[key], f"{where}.{key}", host, source, notes)
            if not lists[slot]:
                notes.warn(
                    f"{where}.{key}",
                    f"no usable identity: iOS refuses every connection to {host!r}; certpin has "
                    "no rule that refuses everything, so the key is NOT imported",
                )
                return None
    if lists["leaf_pins"] is None and lists["ca_pins"] is None:
        notes.warn(
            where,
            "neither NSPinnedCAIdentities nor NSPinnedLeafIdentities: iOS pins nothing for "
            f"{host!r}; left out",
        )
        return None
    if name.split(".")[-1].isdigit() or ":" in name:
        if include:
            notes.warn(f"{where}.{_INCLUDE}", "has no effect on an IP address")
        include = False
    return _Entry(name, where, include, lists)


def _union(entries: Iterable[_Entry], slot: str) -> list[Pin] | None:
    out: list[Pin] | None = None
    for entry in entries:
        pins = entry.lists[slot]
        if pins is not None:
            out = (out or []) + [p for p in pins if p not in (out or [])]
    return out


def _rule(entries: list[_Entry]) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    for _key, slot in _SLOTS:
        pins = _union(entries, slot)
        if pins is not None:
            rule[slot] = [str(p) for p in pins]
    return rule


def import_ats(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    notes = common.Notes()
    root = load_plist_file(data, source, MAX_BYTES, notes)
    pinned, loc, ats = _find_pinned(root, source)
    if ats is not root:
        for key in ats:
            dym = "" if key in _ATS_KEYS else did_you_mean(key, _ATS_KEYS)
            if dym:
                notes.warn(
                    f"NSAppTransportSecurity.{label(key)}", f"unknown key{dym}: iOS ignores it"
                )
    groups: dict[str, list[_Entry]] = {}
    for host, body in pinned.items():
        # Keys are strings: load_plist refuses any other dictionary key.
        entry = _read_entry(host, body, loc, source, notes)
        if entry is None:
            continue
        if entry.name in groups:
            notes.warn(
                entry.where,
                f"{entry.name!r} is configured twice (the keys differ in case): iOS matches "
                "both and combines their identities; imported as one rule with both",
            )
        groups.setdefault(entry.name, []).append(entry)
    domains: dict[str, dict[str, Any]] = {}
    for name, own in groups.items():
        parent = name.partition(".")[2]
        inherited = [e for e in groups.get(parent, []) if e.include]
        if inherited and _rule(inherited) != _rule(own):
            notes.warn(
                own[0].where,
                f"the key {parent!r} includes subdomains, so iOS combines its identities with "
                f"those of {name!r}: imported as their union",
            )
        domains[name] = _rule(own + inherited)
        below = [e for e in own if e.include]
        if below:
            if is_public_suffix(name):
                notes.warn(
                    f"{below[0].where}.{_INCLUDE}",
                    f"iOS also pins every name one label below {name!r}, a public suffix; "
                    f"certpin refuses a wildcard there: only {name!r} imported",
                )
                continue
            domains[f"*.{name}"] = _rule(below)
    if not domains:
        why = "; ".join(notes.items[-3:]) or "NSPinnedDomains is empty"
        raise common.FormatError(
            f"no NSPinnedDomains key that iOS enforces: {common.clip_message(why, 600)}",
            source=source,
        )
    return common.build_policy(
        domains, source, notes, common.version_from_comment(data.decode("utf-8", "replace"), source)
    )
