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

from certpin.core.policy import Policy
from certpin.formats import _common as common
from certpin.formats._nsc_import import MAX_BYTES, MAX_NESTING, import_nsc
from certpin.formats._nsc_schema import _tk_domain_problem

__all__ = ["MAX_BYTES", "MAX_NESTING", "export_nsc", "export_trustkit_android", "import_nsc"]

NSC = "Android Network Security Config"
TRUSTKIT = "TrustKit Android"


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
            continue
        if trustkit and len(pins) < 2:
            notes.warn(rule.pattern, "TrustKit refuses a domain with fewer than 2 pins")
        refused = _tk_domain_problem(entry.host) if trustkit else None
        if refused is not None:
            notes.warn(
                rule.pattern,
                f"TrustKit Android refuses the domain {entry.host} at start-up ({refused}): "
                "the app would crash; pin it with android-nsc instead",
            )
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


# -- import: certpin.formats._nsc_import reads a file the way Android does ----------------------
