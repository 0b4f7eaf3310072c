"""The pin inventory: per domain, what every pin is, which is live and which is the backup.

The document auditors and the next on-call engineer need. For each policy key:

- every pin, with what it names: a certificate of the domain's verified chain (leaf, intermediate
  or root: subject, issuer, key algorithm, notAfter), a spare key/CSR given with ``--key``, or
  nothing known (an unidentified backup);
- **live** (names a certificate of the current verified chain) or **backup** (does not);
- the rule's expiry and the **next planned rotation**: the earlier of the leaf's notAfter minus
  `ROTATION_LEAD` (30 days: time to get the replacement issued and deployed) and the rule's
  ``expires`` (clients stop enforcing then, so a new version must ship before).

Formats: Markdown, self-contained HTML (every value escaped with `html.escape`, inline CSS, no
external resource) and JSON.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from certpin.core.policy import DomainRule, Policy
from certpin.core.times import iso
from certpin.lifecycle.chains import DomainChain, PinInfo, SpareKey, classify_pins, describe_chain
from certpin.lifecycle.revocation import Revocation

__all__ = ["FORMATS", "ROTATION_LEAD", "build_inventory", "live_revocations", "render"]

ROTATION_LEAD = dt.timedelta(days=30)
FORMATS = ("md", "html", "json")


def _pin_entry(info: PinInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "pin": str(info.pin),
        "slots": list(info.slots),
        "status": "live" if info.live else "backup",
        "what": "unknown",
        "chain_positions": list(info.positions),
        "subject": None,
        "issuer": None,
        "key_type": info.key_type,
        "not_after": None,
        "source": None,
    }
    if info.certs:
        cert = info.certs[0]
        entry.update(
            what=cert.role,
            subject=cert.subject,
            issuer=cert.issuer,
            not_after=iso(cert.not_after),
        )
    elif info.spare is not None:
        spare = info.spare
        entry.update(
            what={"private-key": "spare key", "public-key": "spare key", "csr": "spare CSR"}.get(
                spare.kind, "certificate (not in the chain)"
            ),
            subject=spare.subject,
            not_after=iso(spare.not_after),
            source=spare.source,
        )
    return entry


def live_revocations(
    chains: Mapping[str, DomainChain], now: dt.datetime, timeout: float
) -> dict[str, list[Revocation]]:
    """The revocation status of each *live* chain (``--live``/``--address``; chain files are
    not checked: they say nothing about what a server serves now), the server's staple first
    (`certpin.lifecycle.staple.check_live`)."""
    from certpin.lifecycle.chain_files import example_host
    from certpin.lifecycle.staple import check_live
    from certpin.tls.fetch import parse_target

    out: dict[str, list[Revocation]] = {}
    for key, chain in chains.items():
        if not chain.available or not chain.origin.startswith("connect "):
            continue
        host, port = parse_target(chain.origin.removeprefix("connect "))
        sni = example_host(chain.host)
        out[key] = check_live(host, port, sni, chain.chain, now, timeout=timeout)
    return out


def _revocation_facts(
    revocations: Sequence[Revocation] | None, rule: DomainRule
) -> tuple[list[dict[str, Any]] | None, list[str]]:
    if revocations is None:
        return None, []
    from certpin.lifecycle.revocation import alert

    alerts = [alert(r, rule.all_pins) for r in revocations]
    return [r.to_json() for r in revocations], [a for a in alerts if a is not None]


def build_inventory(
    policy: Policy,
    chains: Mapping[str, DomainChain],
    spares: Sequence[SpareKey] = (),
    now: dt.datetime | None = None,
    revocations: Mapping[str, Sequence[Revocation]] | None = None,
) -> dict[str, Any]:
    """The inventory as a JSON-compatible document (see the module docstring).

    `revocations` (`live_revocations`) adds each domain's ``revocation`` list and
    ``revocation_alerts`` (a revoked certificate a pin covers); a domain without one has null.
    """
    now = now or dt.datetime.now(dt.UTC)
    domains = []
    for key, rule in policy.domains.items():
        revocation, alerts = _revocation_facts((revocations or {}).get(key), rule)
        chain = chains.get(key)
        certs = describe_chain(chain.chain) if chain is not None and chain.available else []
        infos = classify_pins(rule, certs, spares)
        candidates: list[tuple[dt.datetime, str]] = []
        if certs:
            candidates.append(
                (
                    certs[0].not_after - ROTATION_LEAD,
                    f"the leaf expires {iso(certs[0].not_after)} "
                    f"(rotation planned {ROTATION_LEAD.days} days before)",
                )
            )
        if rule.expires is not None:
            candidates.append((rule.expires, "the pins expire: ship a new policy version before"))
        next_rotation = min(candidates, default=None)
        domains.append(
            {
                "domain": key,
                "host": None if chain is None else chain.host,
                "chain_source": None if chain is None or not chain.available else chain.origin,
                "chain_note": None if chain is None else (chain.error or chain.note),
                "mode": "enforce" if rule.enforce else "report-only",
                "include_subdomains": rule.include_subdomains,
                "expires": iso(rule.expires),
                "report_uris": list(rule.report_uris),
                "next_rotation": None
                if next_rotation is None
                else {"date": iso(next_rotation[0]), "reason": next_rotation[1]},
                "pins": [_pin_entry(i) for i in infos],
                "chain": [
                    {
                        "position": c.position,
                        "role": c.role,
                        "subject": c.subject,
                        "pin": str(c.pin),
                        "key_type": c.key_type,
                        "not_after": iso(c.not_after),
                    }
                    for c in certs
                ],
                "revocation": revocation,
                "revocation_alerts": alerts,
            }
        )
    return {
        "policy": policy.source,
        "version": policy.version,
        "generated": iso(now),
        "unpinned_hosts": policy.unpinned_hosts,
        "domains": domains,
    }


def render(doc: Mapping[str, Any], fmt: str) -> str:
    """The inventory in ``md``, ``html`` or ``json``."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt == "md":
        return _markdown(doc)
    if fmt == "html":
        return _html(doc)
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")  # Defensive


_COLUMNS = ("Pin", "Status", "What", "Subject", "Issuer", "Key", "Expires", "Slots")


def _row(pin: Mapping[str, Any]) -> list[str]:
    what = pin["what"]
    if pin["chain_positions"]:
        what += f" (chain position {', '.join(str(p) for p in pin['chain_positions'])})"
    if pin["source"]:
        what += f" ({pin['source']})"
    return [
        pin["pin"],
        pin["status"],
        what,
        pin["subject"] or "-",
        pin["issuer"] or "-",
        pin["key_type"] or "-",
        pin["not_after"] or "-",
        ", ".join(pin["slots"]),
    ]


def _facts(domain: Mapping[str, Any]) -> list[tuple[str, str]]:
    rotation = domain["next_rotation"]
    return [
        ("Mode", domain["mode"]),
        ("Include subdomains", "yes" if domain["include_subdomains"] else "no"),
        ("Pins expire", domain["expires"] or "never (no `expires`)"),
        (
            "Next planned rotation",
            "not known (no chain and no `expires`)"
            if rotation is None
            else f"{rotation['date']}: {rotation['reason']}",
        ),
        ("Chain", domain["chain_source"] or (domain["chain_note"] or "not given")),
        ("Report URIs", ", ".join(domain["report_uris"]) or "none"),
    ] + _revocation_lines(domain)


def _revocation_lines(domain: Mapping[str, Any]) -> list[tuple[str, str]]:
    revocation = domain.get("revocation")
    if revocation is None:
        return []
    text = "; ".join(f"#{r['position']} {r['status']}: {r['reason']}" for r in revocation)
    out = [("Revocation", text or "nothing to check (no issuer in the chain)")]
    out += [("ALERT", line) for line in domain.get("revocation_alerts", [])]
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(doc: Mapping[str, Any]) -> str:
    version = "" if doc["version"] is None else f" (version {doc['version']})"
    out = [
        f"# Pin inventory: {_md_cell(str(doc['policy']))}{version}",
        "",
        f"Generated {doc['generated']}. Unpinned hosts: {doc['unpinned_hosts']}.",
        "",
    ]
    for domain in doc["domains"]:
        out += [f"## {_md_cell(domain['domain'])}", ""]
        out += [f"- **{k}:** {_md_cell(v)}" for k, v in _facts(domain)]
        out += ["", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        for pin in domain["pins"]:
            out.append("| " + " | ".join(_md_cell(c) for c in _row(pin)) + " |")
        out.append("")
    return "\n".join(out)


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "td.pin{font-family:monospace}tr.live td{background:#eef8ee}tr.backup td{background:#f6f6fb}"
)


def _html(doc: Mapping[str, Any]) -> str:
    esc = html.escape
    version = "" if doc["version"] is None else f" (version {doc['version']})"
    title = f"Pin inventory: {doc['policy']}{version}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Generated {esc(str(doc['generated']))}. Unpinned hosts: "
        f"{esc(str(doc['unpinned_hosts']))}.</p>",
    ]
    for domain in doc["domains"]:
        out.append(f"<h2>{esc(domain['domain'])}</h2><dl>")
        out += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in _facts(domain)]
        out.append("</dl><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS) + "</tr>")
        for pin in domain["pins"]:
            cells = _row(pin)
            out.append(
                f'<tr class="{esc(pin["status"])}"><td class="pin">{esc(cells[0])}</td>'
                + "".join(f"<td>{esc(c)}</td>" for c in cells[1:])
                + "</tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
