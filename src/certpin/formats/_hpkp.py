"""HTTP Public Key Pinning headers (RFC 7469). DEPRECATED: browsers removed HPKP in 2018-2020.

One header per host, after a ``# host: NAME`` comment line::

    # host: api.example.com
    Public-Key-Pins: pin-sha256="…"; pin-sha256="…"; max-age=5184000; includeSubDomains;
        report-uri="…"      (one line in the file)

Mapping (certpin -> HPKP)::

    key "api.example.com"        the host that sends the header
    include_subdomains           includeSubDomains
    key "**.example.com"         example.com with includeSubDomains (same meaning)
    key "*.example.com"          example.com with includeSubDomains (wider: warned)
    pins                         pin-sha256 (any certificate of the chain, RFC 7469 §2.6)
    leaf_pins / ca_pins          folded into pin-sha256 (weaker: warned)
    enforce = false              Public-Key-Pins-Report-Only
    report_uris                  report-uri (HPKP takes one: the others are warned about)
    expires                      not expressible: max-age is relative to when a client saw the
                                 header; exported with max-age=5184000 (60 days) (warned)
"""

from __future__ import annotations

import re
from typing import Any

from certpin.core.policy import Policy
from certpin.formats import _common as common

FMT = "HPKP"
#: The import size cap: a file of response headers.
MAX_BYTES = 1024 * 1024
MAX_AGE = 5_184_000  # 60 days, RFC 7469 §4.1's example value
_DEPRECATED = (
    "DEPRECATED: HPKP (RFC 7469) was removed from Chrome (72) and Firefox (72); no mainstream "
    "browser enforces these headers. Use them only for clients that still read them."
)


def export_hpkp(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    notes = common.Notes()
    common.policy_notes(policy, notes, FMT)
    out = [*("# " + line for line in common.header_lines(policy, FMT)), f"# {_DEPRECATED}"]
    for entry in common.host_entries(policy, notes, FMT):
        rule = entry.rule
        pins = common.any_position_pins(rule, notes, FMT)
        if not pins:
            continue
        if rule.expires is not None:
            notes.warn(
                rule.pattern,
                f"expires cannot be expressed in HPKP (max-age is relative): max-age={MAX_AGE}",
            )
        parts = [f'pin-sha256="{p.base64}"' for p in pins]
        parts.append(f"max-age={MAX_AGE}")
        if entry.include_subdomains:
            parts.append("includeSubDomains")
        if rule.report_uris:
            uri = common.checked_uri(rule.report_uris[0], policy, rule, FMT)
            parts.append(f'report-uri="{uri}"')
            if len(rule.report_uris) > 1:
                notes.warn(rule.pattern, "HPKP takes one report-uri: the others are left out")
        name = "Public-Key-Pins" if rule.enforce else "Public-Key-Pins-Report-Only"
        out += ["", f"# host: {entry.host}", f"{name}: {'; '.join(parts)}"]
    return notes.result("\n".join(out) + "\n")


_HEADER = re.compile(r"^\s*(Public-Key-Pins(?:-Report-Only)?)\s*:\s*(.*)$", re.IGNORECASE)
_HOST = re.compile(r"^\s*#\s*host:\s*(\S+)\s*$", re.IGNORECASE)
_DIRECTIVE = re.compile(r'\s*([A-Za-z0-9-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;\s]*))?\s*(?:;|$)')


def import_hpkp(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    text = common.check_text(data, source, MAX_BYTES)
    notes = common.Notes()
    domains: dict[str, dict[str, Any]] = {}
    host: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}"
        m = _HOST.match(line)
        if m:
            host = common.check_host(m.group(1), source, where)
            continue
        m = _HEADER.match(line)
        if not m:
            continue
        name = host or (options.domain and common.check_host(options.domain, source, "--domain"))
        if not name:
            raise common.FormatError(
                "a header without a host: put a '# host: NAME' line before it or pass --domain",
                source=source,
                location=where,
            )
        rule = _directives(m.group(2), source, where)
        rule["enforce"] = m.group(1).lower() == "public-key-pins"
        if rule.pop("max_age") == 0:
            notes.warn(f"{source}: {where}", f"max-age=0 removes {name}'s pins: not imported")
            host = None
            continue
        if name in domains:
            raise common.FormatError(f"{name!r} has two headers", source=source, location=where)
        domains[name] = rule
        host = None
    if not domains:
        raise common.FormatError("no Public-Key-Pins header found", source=source)
    return common.build_policy(domains, source, notes, common.version_from_comment(text, source))


def _directives(value: str, source: str, where: str) -> dict[str, Any]:
    pins: list[str] = []
    rule: dict[str, Any] = {"pins": pins, "include_subdomains": False, "report_uris": []}
    max_age: int | None = None
    pos = 0
    value = value.strip()
    while pos < len(value):
        m = _DIRECTIVE.match(value, pos)
        if m is None or m.end() == pos:
            raise common.FormatError(
                f"cannot parse the header at {common.clip(value[pos : pos + 30])}",
                source=source,
                location=where,
            )
        pos = m.end()
        name, arg = m.group(1).lower(), m.group(2)
        arg = arg[1:-1] if arg and arg.startswith('"') else arg
        if name.startswith("pin-"):
            pins.append(str(common.parse_pin(f'{name}="{arg}"', source, where)))
        elif name == "max-age":
            if not arg or not re.fullmatch(r"[0-9]{1,12}", arg):
                raise common.FormatError(
                    f"max-age={common.clip(arg or '')} is not a number",
                    source=source,
                    location=where,
                )
            max_age = int(arg)
        elif name == "includesubdomains":
            rule["include_subdomains"] = True
        elif name == "report-uri":
            rule["report_uris"] = [arg]
        else:
            raise common.FormatError(
                f"unknown directive {common.clip(m.group(1))}", source=source, location=where
            )
    if max_age is None:
        raise common.FormatError(
            "max-age is required (RFC 7469 §2.1.2)", source=source, location=where
        )
    if not pins:
        raise common.FormatError("no pin-sha256 directive", source=source, location=where)
    rule["max_age"] = max_age
    return rule
