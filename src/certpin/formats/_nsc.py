"""Android Network Security Config XML, and TrustKit Android's extension of it.

Mapping (certpin -> NSC)::

    key "api.example.com"            <domain includeSubdomains="false">api.example.com</domain>
    include_subdomains = true        includeSubdomains="true"
    key "**.example.com"             example.com, includeSubdomains="true" (same meaning)
    key "*.example.com"              example.com, includeSubdomains="true" (wider: warned)
    pins                             <pin digest="SHA-256">  (any certificate of the chain)
    leaf_pins / ca_pins              folded into the pin-set (weaker: warned)
    expires                          <pin-set expiration="YYYY-MM-DD">
    enforce = false                  android-nsc: rule left out (warned)
                                     trustkit-android: <trustkit-config enforcePinning="false">
    report_uris                      trustkit-android: <report-uri>; android-nsc: warned

When several domain-configs match a host, Android applies the most specific one alone, as certpin
does. Nested ``<domain-config>`` elements inherit the parent's pin-set and trustkit-config.
"""

from __future__ import annotations

from typing import Any

from certpin.core.policy import Policy
from certpin.formats import _common as common
from certpin.formats._structured import Node, label, parse_xml

NSC = "Android Network Security Config"
#: how deep <domain-config> elements may nest (real files use one or two levels; the limit keeps
#: a hostile file from exhausting the stack).
MAX_NESTING = 32
TRUSTKIT = "TrustKit Android"
#: The import size cap: a network_security_config.xml is a few kilobytes.
MAX_BYTES = 1024 * 1024


def export_nsc(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    return _export(policy, trustkit=False)


def export_trustkit_android(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    return _export(policy, trustkit=True)


def _export(policy: Policy, *, trustkit: bool) -> common.ExportResult:
    fmt = TRUSTKIT if trustkit else NSC
    notes = common.Notes()
    common.policy_notes(policy, notes, fmt)
    out = ['<?xml version="1.0" encoding="utf-8"?>']
    out += [f"<!-- {common.xml_escape(line)} -->" for line in common.header_lines(policy, fmt)]
    out.append("<network-security-config>")
    for entry in common.host_entries(policy, notes, fmt):
        rule = entry.rule
        if not trustkit and common.skip_report_only(rule, notes, fmt):
            continue
        pins = common.any_position_pins(rule, notes, fmt)
        if not pins:
            notes.warn(rule.pattern, f"left out: no pin {fmt} can express")
            continue
        if trustkit and len(pins) < 2:
            notes.warn(rule.pattern, "TrustKit refuses a domain with fewer than 2 pins")
        if trustkit and not rule.enforce:
            notes.warn(
                rule.pattern,
                'report-only: TrustKit\'s enforcePinning="false" only applies below Android 7; '
                "from Android 7 on the OS enforces the <pin-set> of this file itself",
            )
        include = "true" if entry.include_subdomains else "false"
        out.append("  <domain-config>")
        out.append(
            f'    <domain includeSubdomains="{include}">{common.xml_escape(entry.host)}</domain>'
        )
        expires = common.expiry_date(rule, notes, fmt)
        attr = f' expiration="{expires}"' if expires else ""
        out.append(f"    <pin-set{attr}>")
        out += [f'      <pin digest="SHA-256">{pin.base64}</pin>' for pin in pins]
        out.append("    </pin-set>")
        if trustkit:
            enforce = "true" if rule.enforce else "false"
            tk = f'    <trustkit-config enforcePinning="{enforce}" disableDefaultReportUri="true"'
            if rule.report_uris:
                out.append(tk + ">")
                uris = [
                    common.xml_escape(common.checked_uri(u, policy, rule, fmt))
                    for u in rule.report_uris
                ]
                out += [f"      <report-uri>{u}</report-uri>" for u in uris]
                out.append("    </trustkit-config>")
            else:
                out.append(tk + " />")
        else:
            common.no_report_note(rule, notes, fmt)
        out.append("  </domain-config>")
    out.append("</network-security-config>")
    return notes.result("\n".join(out) + "\n")


# -- import ---------------------------------------------------------------------------------------


def import_nsc(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    common.check_size(data, source, MAX_BYTES)
    root = parse_xml(data, source)
    if root.tag != "network-security-config":
        raise common.FormatError(
            f"the root element must be <network-security-config>, got <{root.name}>",
            source=source,
            location=root.where(),
        )
    notes = common.Notes()
    domains: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for child in root.children:
        if child.tag == "domain-config":
            _domain_config(child, None, None, domains, lines, source, notes, 1)
        elif child.tag in ("base-config", "debug-overrides"):
            notes.warn(
                f"{source}: {child.where()}",
                "ignored: certpin policies hold pins, not trust anchors or cleartext settings",
            )
        else:
            raise common.FormatError(
                f"unknown element <{child.name}> in <network-security-config>",
                source=source,
                location=child.where(),
            )
    return common.build_policy(
        domains, source, notes, common.version_from_comment(data.decode("utf-8", "replace"), source)
    )


def _domain_config(
    node: Node,
    parent_pins: Node | None,
    parent_tk: Node | None,
    domains: dict[str, dict[str, Any]],
    lines: dict[str, int],
    source: str,
    notes: common.Notes,
    depth: int,
) -> None:
    if depth > MAX_NESTING:
        raise common.FormatError(
            f"<domain-config> nested more than {MAX_NESTING} levels deep",
            source=source,
            location=node.where(),
        )
    pin_set, tk = parent_pins, parent_tk
    hosts: list[tuple[str, bool, Node]] = []
    nested: list[Node] = []
    for child in node.children:
        if child.tag == "domain":
            include = _bool(child, "includeSubdomains", False, source)
            host = common.check_host(child.text.strip(), source, child.where())
            hosts.append((host, include, child))
        elif child.tag == "pin-set":
            pin_set = child
        elif child.tag == "trustkit-config":
            tk = child
        elif child.tag == "domain-config":
            nested.append(child)
        elif child.tag == "trust-anchors":
            notes.warn(
                f"{source}: {child.where()}",
                "ignored: a certpin policy holds pins, not trust anchors",
            )
        else:
            raise common.FormatError(
                f"unknown element <{child.name}> in <domain-config>",
                source=source,
                location=child.where(),
            )
    if not hosts:
        raise common.FormatError(
            "a <domain-config> needs at least one <domain>", source=source, location=node.where()
        )
    body = _rule_body(pin_set, tk, source, notes) if pin_set is not None else None
    for host, include, where in hosts:
        if body is None:
            notes.warn(f"{source}: {where.where()}", f"{host} has no <pin-set>: not pinned")
            continue
        if host in domains:
            raise common.FormatError(
                f"domain {host!r} is already configured at line {lines[host]}",
                source=source,
                location=where.where(),
            )
        domains[host] = {**body, "include_subdomains": include}
        lines[host] = where.line
    for child in nested:
        _domain_config(child, pin_set, tk, domains, lines, source, notes, depth + 1)


def _rule_body(pin_set: Node, tk: Node | None, source: str, notes: common.Notes) -> dict[str, Any]:
    pins = []
    for child in pin_set.children:
        if child.tag != "pin":
            raise common.FormatError(
                f"unknown element <{child.name}> in <pin-set>",
                source=source,
                location=child.where(),
            )
        digest = child.attrib.get("digest")
        if digest != "SHA-256":
            raise common.FormatError(
                f'<pin digest="{label(digest or "")}">: Android only accepts digest="SHA-256"',
                source=source,
                location=child.where(),
            )
        pins.append(str(common.parse_pin("sha256/" + child.text.strip(), source, child.where())))
    if not pins:
        raise common.FormatError(
            "a <pin-set> needs at least one <pin>", source=source, location=pin_set.where()
        )
    body: dict[str, Any] = {"pins": pins}
    expiration = pin_set.attrib.get("expiration")
    if expiration is not None:
        body["expires"] = common.parse_date(expiration, source, pin_set.where())
    if tk is not None:
        body["enforce"] = _bool(tk, "enforcePinning", False, source)
        if not _bool(tk, "disableDefaultReportUri", False, source):
            notes.warn(
                f"{source}: {tk.where()}",
                "TrustKit also sends reports to its vendor's default report URI here; not imported",
            )
        uris = []
        for child in tk.children:
            if child.tag != "report-uri":
                raise common.FormatError(
                    f"unknown element <{child.name}> in <trustkit-config>",
                    source=source,
                    location=child.where(),
                )
            uris.append(common.check_report_uri(child.text.strip(), source, child.where()))
        body["report_uris"] = uris
    return body


def _bool(node: Node, name: str, default: bool, source: str) -> bool:
    value = node.attrib.get(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise common.FormatError(
            f'{name}="{label(value)}": expected "true" or "false"',
            source=source,
            location=node.where(),
        )
    return value == "true"
