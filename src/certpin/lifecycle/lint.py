"""Policy lint: the mistakes that turn pinning into an outage, or into no protection at all.

Rule ids are stable: ``CP1xx`` need only the policy, ``CP2xx`` need the verified chain of the
domain (``--chain``/``--connect``) or the spare keys given with ``--key``. Every finding has a
severity (``error`` fails the run, ``warning`` fails it with ``--strict``, ``info`` never), a
one-line why and a fix. docs/lint.md has the table; `RULES` is its source.

Whether the policy accepts a chain is `certpin.verdict`'s decision, which certificate a pin names
`Pin.matches` (via `certpin.lifecycle.chains`); neither is re-implemented here.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from certpin.core.hosts import HostPattern, PatternKind, registrable_domain
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.core.times import day
from certpin.core.verdict import VerdictStatus
from certpin.formats._lenient import placeholder_reason
from certpin.lifecycle.chains import (
    DomainChain,
    PinInfo,
    SpareKey,
    classify_pins,
    describe_chain,
    key_family,
    pin_positions,
    verdict_for_name,
)

__all__ = ["RULES", "Finding", "Rule", "Severity", "exit_code", "lint_policy"]

Severity = Literal["error", "warning", "info"]
_ORDER = {"error": 0, "warning": 1, "info": 2}

#: how far ahead an ``expires`` date may lie before clients risk carrying stale pins for too long.
MAX_EXPIRY = dt.timedelta(days=365)


@dataclass(frozen=True)
class Rule:
    """A lint rule: stable id, default severity, short name, why it matters, how to fix it."""

    id: str
    severity: Severity
    name: str
    why: str
    fix: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule(
            "CP101",
            "error",
            "fewer-than-two-pins",
            "one pin leaves no backup: losing or rotating that key locks every client out",
            "add a backup pin: a spare key (`certpin keygen`) or a CA you could move to",
        ),
        Rule(
            "CP102",
            "warning",
            "duplicate-pin",
            "a pin listed twice (in one slot, or in two of pins/leaf_pins/ca_pins) looks like "
            "two pins but gives one",
            "remove the duplicate and add a real backup pin",
        ),
        Rule(
            "CP103",
            "warning",
            "expires-missing",
            "without `expires`, clients that never update enforce these pins forever",
            "set `expires` to a date within a year (e.g. the leaf's notAfter)",
        ),
        Rule(
            "CP104",
            "error",
            "expires-past",
            "the rule has expired: clients no longer check these pins (CA validation only)",
            "publish a new version with fresh pins and a future `expires`",
        ),
        Rule(
            "CP105",
            "warning",
            "expires-too-far",
            "pins enforced more than a year ahead outlive most certificates and keys",
            "set `expires` to at most one year from now",
        ),
        Rule(
            "CP106",
            "warning",
            "report-only-without-report-uri",
            "a report-only rule with no report URI never tells anyone what it saw",
            "add `report_uris`, or enforce the rule",
        ),
        Rule(
            "CP107",
            "warning",
            "weaker-than-parent",
            "a narrower rule replaces its parent for its hosts; dropping pins drops backups",
            "carry the parent's pins into the narrower rule (or remove the narrower rule)",
        ),
        Rule(
            "CP108",
            "warning",
            "report-only-under-enforcing-parent",
            "a report-only rule under an enforcing parent switches enforcement off for its hosts",
            "set `enforce = true`, or remove the narrower rule",
        ),
        Rule(
            "CP109",
            "warning",
            "placeholder-pin",
            "placeholder pin: no key can have it, so it is no backup (the SHA-256 of empty "
            "input, one repeated character, an ABCDEF… sequence: what apps ship to pass a "
            "two-pin rule)",
            "replace it with the pin of a spare key you hold (`certpin keygen`) or of a CA you "
            "could move to",
        ),
        Rule(
            "CP201",
            "error",
            "lock-out",
            "no pin matches the verified chain the domain serves now: clients fail to connect",
            "add a pin of the served chain (`certpin pin --connect HOST`) before deploying",
        ),
        Rule(
            "CP202",
            "error",
            "no-backup-pin",
            "every pin matches the current chain (RFC 7469 §4.3: one pin must not), so "
            "replacing the key locks clients out",
            "pin a spare key that is not in use yet (`certpin keygen`)",
        ),
        Rule(
            "CP203",
            "warning",
            "root-only",
            "only the root CA is pinned: any certificate that CA issues for the name passes",
            "pin your own key or your issuing intermediate as well",
        ),
        Rule(
            "CP204",
            "warning",
            "leaf-only-no-spare",
            "only the leaf key is pinned and no backup pin is a spare key you hold",
            "generate a spare key (`certpin keygen`), pin it and pass it with --key",
        ),
        Rule(
            "CP205",
            "warning",
            "expires-after-leaf",
            "the pins outlive the pinned leaf certificate; its replacement must keep the key",
            "set `expires` to the leaf's notAfter or earlier, or pin the replacement key now",
        ),
        Rule(
            "CP206",
            "error",
            "weak-key",
            "an RSA key under 2048 bits (or a DSA key) can be factored or forged",
            "replace the key with RSA >= 2048, P-256/P-384 or Ed25519",
        ),
        Rule(
            "CP207",
            "warning",
            "single-key-algorithm",
            "every pin is on one key algorithm: no crypto agility if that algorithm breaks",
            "keep a backup key of another type (e.g. `certpin keygen --type rsa3072`)",
        ),
        Rule(
            "CP208",
            "error",
            "no-verified-chain",
            "the domain's verified chain could not be obtained, so chain rules did not run",
            "fix the connection, or give --chain DOMAIN=FILE",
        ),
        Rule(
            "CP209",
            "warning",
            "borrowed-leaf-pin",
            "a backup pin is the leaf key of an unrelated host: this host's server can never "
            "present it, so it is no backup (a pin copied between rules to pass a two-pin rule)",
            "replace it with the pin of a spare key you hold for this host (`certpin keygen`)",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One lint result."""

    rule: str
    severity: Severity
    domain: str | None
    message: str

    @property
    def why(self) -> str:
        return RULES[self.rule].why

    @property
    def fix(self) -> str:
        return RULES[self.rule].fix

    @property
    def name(self) -> str:
        return RULES[self.rule].name

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "domain": self.domain,
            "message": self.message,
            "why": self.why,
            "fix": self.fix,
        }


def exit_code(findings: Sequence[Finding], strict: bool = False) -> int:
    """0 clean, 1 when an error (or, with `strict`, a warning) was found."""
    failing = {"error", "warning"} if strict else {"error"}
    return 1 if any(f.severity in failing for f in findings) else 0


def lint_policy(
    policy: Policy,
    chains: Mapping[str, DomainChain] | None = None,
    spares: Sequence[SpareKey] = (),
    now: dt.datetime | None = None,
) -> list[Finding]:
    """Lint `policy`; chain rules run for keys that have a chain in `chains`.

    Args:
        policy: the policy.
        chains: policy key -> verified chain (from `certpin.lifecycle.chains.acquire_chains`).
        spares: spare keys/CSRs/certificates the backup pins may name (``--key``).
        now: the time to judge expiry at (default: now).

    Returns:
        Findings, errors first, in policy order within a severity.
    """
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    findings: list[Finding] = []
    for key, rule in policy.domains.items():
        findings += _policy_rules(policy, key, rule, now)
        chain = (chains or {}).get(key)
        findings += _chain_rules(policy, key, rule, chain, spares, now)
    findings += _borrowed(policy, chains or {})
    order = {k: i for i, k in enumerate(policy.domains)}
    findings.sort(key=lambda f: (_ORDER[f.severity], order.get(f.domain or "", -1), f.rule))
    return findings


def _finding(rule_id: str, domain: str, message: str, severity: Severity | None = None) -> Finding:
    return Finding(rule_id, severity or RULES[rule_id].severity, domain, message)


# -- CP1xx: the policy alone ----------------------------------------------------------------


def _policy_rules(policy: Policy, key: str, rule: DomainRule, now: dt.datetime) -> list[Finding]:
    out: list[Finding] = []
    distinct = rule.all_pins
    if len(distinct) < 2:
        why = "allow_single_pin = true" if rule.enforce else "report-only"
        out.append(
            _finding(
                "CP101",
                key,
                f"{len(distinct)} distinct pin ({why}): {distinct[0] if distinct else '-'}",
                "error" if rule.enforce else "warning",
            )
        )
    slots = ("pins", "leaf_pins", "ca_pins")
    for slot in slots:
        counts = Counter(getattr(rule, slot))
        for pin, n in counts.items():
            if n > 1:
                out.append(_finding("CP102", key, f"{slot} lists {pin} {n} times"))
    for pin in rule.all_pins:
        # The same pin in two slots is one key counted twice, not a backup.
        listed = [slot for slot in slots if pin in getattr(rule, slot)]
        if len(listed) > 1:
            out.append(_finding("CP102", key, f"{pin} is listed in both {' and '.join(listed)}"))
    if rule.expires is None:
        out.append(_finding("CP103", key, "no `expires` date"))
    elif rule.expired(now):
        out.append(_finding("CP104", key, f"expired on {day(rule.expires)}"))
    elif rule.expires - now > MAX_EXPIRY:
        days = (rule.expires - now).days
        out.append(
            _finding("CP105", key, f"expires {day(rule.expires)}, {days} days from now (> 365)")
        )
    out += _placeholders(key, rule)
    if not rule.enforce and not rule.report_uris:
        out.append(_finding("CP106", key, "report-only (enforce = false) with no report_uris"))
    parent = parent_rule(policy, key)
    if parent is not None:
        own, theirs = set(rule.all_pins), set(parent.all_pins)
        missing = [str(p) for p in parent.all_pins if p not in own]
        if len(own) < len(theirs):
            out.append(
                _finding(
                    "CP107",
                    key,
                    f"overrides {parent.pattern} with {len(own)} pin(s) instead of "
                    f"{len(theirs)}; drops {', '.join(missing)}",
                )
            )
        elif missing:
            out.append(
                _finding(
                    "CP107",
                    key,
                    f"overrides {parent.pattern} with different pins; drops {', '.join(missing)}",
                )
            )
        if parent.enforce and not rule.enforce:
            out.append(
                _finding("CP108", key, f"report-only, but its parent {parent.pattern} enforces")
            )
    return out


def parent_rule(policy: Policy, key: str) -> DomainRule | None:
    """The rule that would apply to `key`'s hosts if `key` were removed, when it is broader.

    The rules covering the key's hosts come from `Policy.rules_covering` in the client's
    order of precedence (for ``*.base``: the hosts one label under base); the first one that
    is not the key's own is what would apply without it. It is kept only when it hangs off an
    ancestor domain or is a broader pattern on the same base (``**.x`` over ``x`` and ``*.x``;
    ``x`` with include_subdomains over ``*.x``).
    """
    pattern = HostPattern.parse(key)
    below = 1 if pattern.kind is PatternKind.ONE_LABEL else 0
    covering = policy.rules_covering(pattern.base, below=below)
    found = next((r for r in covering if r.pattern != key), None)
    if found is None:
        return None
    other = HostPattern.parse(found.pattern)
    if pattern.base.endswith("." + other.base):
        return found
    if other.base != pattern.base:
        return None  # Defensive: only rules on the host or its ancestors cover it
    if other.kind is PatternKind.ANY_LABELS and pattern.kind is not PatternKind.ANY_LABELS:
        return found
    if pattern.kind is PatternKind.ONE_LABEL and other.kind is PatternKind.EXACT:
        return found  # an exact key with include_subdomains
    return None


def _placeholders(key: str, rule: DomainRule) -> list[Finding]:
    """CP109: an error when placeholders are all the backup an enforcing rule has."""
    duds = [(pin, why) for pin in rule.all_pins if (why := placeholder_reason(pin)) is not None]
    real = len(rule.all_pins) - len(duds)
    out = []
    for pin, why in duds:
        if real == 0:
            tail = "; the rule has no real pin at all: every connection fails"
        elif real == 1:
            tail = "; it is the rule's only backup: rotating the one real key locks clients out"
        else:
            tail = ""
        severity: Severity = "error" if real <= 1 and rule.enforce else "warning"
        out.append(_finding("CP109", key, f"{pin} is a placeholder ({why}){tail}", severity))
    return out


def _borrowed(policy: Policy, chains: Mapping[str, DomainChain]) -> list[Finding]:
    """CP209: "the same pin on unrelated hosts", where the chains can tell.

    A CA key legitimately recurs across a company's unrelated domains, so a shared pin alone
    proves nothing. A pin that is the *leaf* key of another site's verified chain, listed for a
    host whose own chain does not have it, is a copied pin: that server never presents it.
    """
    leaf_of: dict[Pin, list[str]] = {}
    for key, chain in chains.items():
        if chain.available and key in policy.domains:
            leaf_of.setdefault(Pin.for_certificate(chain.chain[0]), []).append(key)
    out = []
    for key, rule in policy.domains.items():
        own = chains.get(key)
        for pin in rule.all_pins:
            owners = [
                k for k in leaf_of.get(pin, ()) if registrable_domain(k) != registrable_domain(key)
            ]
            if not owners:
                continue
            if own is not None and own.available and pin_positions(pin, own.chain):
                continue  # this host serves that key too
            out.append(
                _finding(
                    "CP209",
                    key,
                    f"{pin} is the leaf key of {owners[0]} (its verified chain), an unrelated "
                    f"host: {key}'s server never presents it, so it is no backup",
                )
            )
    return out


# -- CP2xx: the verified chain and spare keys ------------------------------------------------


def _chain_rules(
    policy: Policy,
    key: str,
    rule: DomainRule,
    chain: DomainChain | None,
    spares: Sequence[SpareKey],
    now: dt.datetime,
) -> list[Finding]:
    out: list[Finding] = []
    certs = describe_chain(chain.chain) if chain is not None and chain.available else []
    infos = classify_pins(rule, certs, spares)
    out += _key_rules(key, certs, spares, infos)
    if chain is None or not chain.available:
        if chain is not None and chain.error:
            out.append(_finding("CP208", key, chain.error))
        elif chain is not None and chain.note:
            out.append(_finding("CP208", key, f"chain rules skipped: {chain.note}", "info"))
        return out
    result = verdict_for_name(chain.host, chain.chain, policy, now)
    if result.status is VerdictStatus.FAILED:
        out.append(
            _finding(
                "CP201",
                key,
                f"no pin matches the verified chain of {chain.host} ({chain.origin}): "
                + "; ".join(f"{c.position} {c.pin} {c.subject}" for c in certs),
                "error" if rule.enforce else "warning",
            )
        )
        return out
    live = [i for i in infos if i.live]
    backups = [i for i in infos if not i.live]
    if live and not backups:
        out.append(
            _finding(
                "CP202",
                key,
                f"all {len(live)} pin(s) match the current chain of {chain.host}; none is a backup",
            )
        )
    live_positions = {p for i in live for p in i.positions}
    last = len(certs) - 1
    if live_positions and live_positions == {last} and certs[last].role == "root":
        out.append(_finding("CP203", key, f"the only live pin is the root {certs[last].subject}"))
    if live_positions == {0} and backups and not any(b.spare is not None for b in backups):
        out.append(
            _finding(
                "CP204",
                key,
                f"only the leaf key of {chain.host} is pinned, and none of the "
                f"{len(backups)} backup pin(s) is a spare key given with --key",
            )
        )
    if 0 in live_positions and rule.expires is not None and rule.expires > certs[0].not_after:
        out.append(
            _finding(
                "CP205",
                key,
                f"expires {day(rule.expires)}, after the pinned leaf's notAfter "
                f"{day(certs[0].not_after)}",
            )
        )
    return out


def _key_rules(
    key: str, certs: Sequence[Any], spares: Sequence[SpareKey], infos: Sequence[PinInfo]
) -> list[Finding]:
    out: list[Finding] = []
    for cert in certs:
        if _weak(cert.key_type):
            out.append(
                _finding(
                    "CP206",
                    key,
                    f"chain position {cert.position} ({cert.subject}): {cert.key_type}",
                )
            )
    named = {id(i.spare): i.spare for i in infos if i.spare is not None}
    for spare in named.values():
        if _weak(spare.key_type):
            out.append(_finding("CP206", key, f"spare key {spare.source}: {spare.key_type}"))
    types = [i.key_type for i in infos]
    known = sorted({t for t in types if t is not None})
    if len(types) >= 2 and None not in types:
        families = {key_family(t) for t in known}
        if len(families) == 1:
            out.append(
                _finding(
                    "CP207",
                    key,
                    f"all {len(types)} pins are {families.pop()} keys ({', '.join(known)})",
                )
            )
    return out


def _weak(key_type: str) -> bool:
    family, _, size = key_type.partition(" ")
    if family == "DSA":
        return True
    return family == "RSA" and size.isdigit() and int(size) < 2048
