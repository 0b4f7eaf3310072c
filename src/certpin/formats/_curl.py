"""curl's ``--pinnedpubkey 'sha256//…;sha256//…'``, as a shell snippet with one command per host.

curl compares the pins with the *leaf* certificate's public key only (never a CA), so:

    leaf_pins                    exact
    pins                         exported, but a pin of a CA key there never matches (warned)
    ca_pins                      left out (warned)
    key "*.x", "**.x",
    include_subdomains           curl has no host patterns: a commented template (warned)
    expires, report_uris         not expressible (warned)
    enforce = false              rule left out (warned)

The import reads every command line holding ``--pinnedpubkey`` and an ``https://`` URL, and makes
an exact ``leaf_pins`` rule for the URL's host.
"""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

from certpin.core.hosts import HostPattern, PatternKind
from certpin.core.pins import Pin
from certpin.core.policy import Policy
from certpin.formats import _common as common

FMT = "curl"
#: The import size cap: a shell script of curl commands.
MAX_BYTES = 1024 * 1024


def pinnedpubkey(pins: list[Pin]) -> str:
    """The ``--pinnedpubkey`` value for SHA-256 SPKI pins."""
    return ";".join(f"sha256//{p.base64}" for p in pins)


def export_curl(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    notes = common.Notes()
    common.policy_notes(policy, notes, FMT)
    out = ["#!/bin/sh", *("# " + line for line in common.header_lines(policy, FMT))]
    out.append("# curl compares --pinnedpubkey with the server's leaf key only (never a CA key).")
    for rule in policy.domains.values():
        if common.skip_report_only(rule, notes, FMT):
            continue
        if rule.ca_pins:
            notes.warn(
                rule.pattern,
                "ca_pins left out: curl only pins the leaf key, so CA pins cannot be expressed",
            )
        if rule.pins:
            notes.warn(
                rule.pattern,
                "`pins` exported as leaf pins: curl only compares the leaf key, so a CA key "
                "among them never matches (list leaf keys under leaf_pins for an exact export)",
            )
        pins = common.sha256_spki(rule.pins + rule.leaf_pins, rule.pattern, notes, FMT)
        if not pins:
            common.no_pins_note(rule, notes, FMT)
            continue
        common.no_expiry_note(rule, notes, FMT)
        common.no_report_note(rule, notes, FMT)
        value = shlex.quote(pinnedpubkey(pins))
        pattern = HostPattern.parse(rule.pattern)
        out.append("")
        out.append(f"# {rule.pattern}")
        if pattern.kind is PatternKind.EXACT and not rule.include_subdomains:
            out.append(f"curl --pinnedpubkey {value} {shlex.quote(_url(pattern.base))}")
            continue
        notes.warn(
            rule.pattern,
            "curl has no host patterns: written as a commented template; run it once per host",
        )
        out.append("# curl has no host patterns: use this for each host the rule covers")
        out.append(f"# curl --pinnedpubkey {value} 'https://HOST/'")
    return notes.result("\n".join(out) + "\n")


def _url(host: str) -> str:
    return f"https://[{host}]/" if ":" in host else f"https://{host}/"


def import_curl(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    text = common.check_text(data, source, MAX_BYTES)
    domains: dict[str, dict[str, Any]] = {}
    notes = common.Notes()
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or "--pinnedpubkey" not in line:
            continue
        where = f"line {number}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise common.FormatError(
                f"cannot split the command: {exc}", source=source, location=where
            ) from None
        value = url = None
        for i, word in enumerate(words):
            if word == "--pinnedpubkey" and i + 1 < len(words):
                value = words[i + 1]
            elif word.startswith("--pinnedpubkey="):
                value = word.partition("=")[2]
            elif word.startswith("https://") and url is None:
                url = word
        if value is None or url is None:
            raise common.FormatError(
                "expected --pinnedpubkey 'sha256//…' and an https:// URL on the line",
                source=source,
                location=where,
            )
        if not value.startswith("sha256//"):
            raise common.FormatError(
                f"--pinnedpubkey {common.clip(value)} is a key file, not sha256// hashes; run "
                "`certpin pin FILE` to get its pin",
                source=source,
                location=where,
            )
        try:
            hostname = urlsplit(url).hostname or ""
        except ValueError as exc:  # an unbalanced "[" of an IPv6 literal, say
            raise common.FormatError(
                f"invalid URL {common.clip(url)}: {exc}", source=source, location=where
            ) from None
        host = common.check_host(hostname, source, where)
        pins = [str(common.parse_pin(item, source, where)) for item in value.split(";") if item]
        if host in domains:
            raise common.FormatError(f"{host!r} is pinned twice", source=source, location=where)
        domains[host] = {"leaf_pins": pins}
    if not domains:
        raise common.FormatError(
            "no curl command with --pinnedpubkey and an https:// URL found", source=source
        )
    return common.build_policy(domains, source, notes, common.version_from_comment(text, source))
