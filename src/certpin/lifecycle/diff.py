"""How two policies pin the same hosts differently: ``certpin diff A B`` (docs/cli.md).

Two policies can say the same thing with different keys (Android's ``include_subdomains``
against iOS's host plus ``*.host``), so they are compared by what they do, not by how they are
written: for every key of either policy the hosts it stands for are probed — the host itself,
a host one label under it (``*.host``) and, for keys that reach deeper, a host two or more labels
under it (``*.*.host``: every certpin key treats all depths from two on alike) — and the rule
each policy applies there (`Policy.lookup`, the one decision the TLS hook uses) is compared.
A probe whose pair of rules was already compared at a shallower probe of the same key is not
reported again.

Each `Difference` has a ``kind``:

- ``host``: the host is pinned by one policy only (``a`` / ``b``: the covering key or None);
- ``subdomains``: the same, for the hosts under a key (``*.host``, ``*.*.host``);
- ``pins``: the pins differ (``a`` / ``b``: every pin of the rule, sorted);
- ``slots``: the same pins, in different slots (``pins``, ``leaf_pins``, ``ca_pins``; ``a`` /
  ``b``: {slot: pins});
- ``expiry``: ``expires`` differs (ISO dates, or None: never);
- ``enforcement``: one enforces, the other only reports (``"enforce"`` / ``"report-only"``);
- ``unpinned_hosts``: the policies' treatment of hosts without a rule (``"allow"`` / ``"deny"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from certpin.core.hosts import HostPattern, PatternKind
from certpin.core.policy import DomainRule, Policy
from certpin.core.times import iso

__all__ = ["KINDS", "Difference", "diff_policies"]

KINDS = ("host", "subdomains", "pins", "slots", "expiry", "enforcement", "unpinned_hosts")
_SLOTS = ("pins", "leaf_pins", "ca_pins")


@dataclass(frozen=True)
class Difference:
    """One way the two policies differ for one host.

    Attributes:
        host: the host probed: ``api.example.com``, ``*.example.com`` (any host one label
            under it), ``*.*.example.com`` (any host two or more labels under it), or ``*``
            for a policy-wide difference.
        kind: one of `KINDS` (see the module docstring).
        a: the first policy's value (JSON-compatible).
        b: the second policy's value.
        a_rule: the key of the first policy's rule that applies, or None.
        b_rule: the same for the second policy.
    """

    host: str
    kind: str
    a: Any
    b: Any
    a_rule: str | None
    b_rule: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "kind": self.kind,
            "a": self.a,
            "b": self.b,
            "a_rule": self.a_rule,
            "b_rule": self.b_rule,
        }


def _probes(pattern: str, include_subdomains: bool) -> list[tuple[str, int]]:
    """(base host, labels below it) for every kind of host `pattern` stands for."""
    parsed = HostPattern.parse(pattern)
    if parsed.kind is PatternKind.EXACT:
        deep = include_subdomains  # an IP address has no hosts under it: lookups say so
        return [(parsed.base, 0)] + ([(parsed.base, 1), (parsed.base, 2)] if deep else [])
    if parsed.kind is PatternKind.ONE_LABEL:
        return [(parsed.base, 1)]
    return [(parsed.base, 0), (parsed.base, 1), (parsed.base, 2)]


def _shown(base: str, below: int) -> str:
    return "*." * below + base


def _pins(rule: DomainRule) -> list[str]:
    return sorted(str(p) for p in rule.all_pins)


def _slots(rule: DomainRule) -> dict[str, list[str]]:
    return {slot: sorted(str(p) for p in getattr(rule, slot)) for slot in _SLOTS}


def _compare(host: str, below: int, a: DomainRule | None, b: DomainRule | None) -> list[Difference]:
    if a is None and b is None:
        return []
    a_key = None if a is None else a.pattern
    b_key = None if b is None else b.pattern
    if a is None or b is None:
        kind = "host" if below == 0 else "subdomains"
        return [Difference(host, kind, a_key, b_key, a_key, b_key)]
    found = []
    if _pins(a) != _pins(b):
        found.append(Difference(host, "pins", _pins(a), _pins(b), a_key, b_key))
    elif _slots(a) != _slots(b):
        found.append(Difference(host, "slots", _slots(a), _slots(b), a_key, b_key))
    if a.expires != b.expires:
        a_exp = None if a.expires is None else iso(a.expires)
        b_exp = None if b.expires is None else iso(b.expires)
        found.append(Difference(host, "expiry", a_exp, b_exp, a_key, b_key))
    if a.enforce != b.enforce:
        mode = {True: "enforce", False: "report-only"}
        found.append(
            Difference(host, "enforcement", mode[a.enforce], mode[b.enforce], a_key, b_key)
        )
    return found


def diff_policies(a: Policy, b: Policy) -> list[Difference]:
    """Every difference between what `a` and `b` do for the hosts either of them pins, in the
    order of the keys (`a`'s, then `b`'s keys that `a` lacks); empty when they agree.

    Time: a few lookups per key of either policy.
    """
    found: list[Difference] = []
    if a.unpinned_hosts != b.unpinned_hosts:
        found.append(
            Difference("*", "unpinned_hosts", a.unpinned_hosts, b.unpinned_hosts, None, None)
        )
    seen: set[tuple[str, int]] = set()
    rules = list(a.domains.values()) + [r for k, r in b.domains.items() if k not in a.domains]
    for rule in rules:
        compared: set[tuple[int, int]] = set()
        for base, below in _probes(rule.pattern, rule.include_subdomains):
            if (base, below) in seen:
                continue
            seen.add((base, below))
            pair_a, pair_b = a.lookup(base, below=below), b.lookup(base, below=below)
            pair = (id(pair_a), id(pair_b))
            if below and pair in compared:
                continue  # the same two rules as one label up: nothing new to say
            compared.add(pair)
            found += _compare(_shown(base, below), below, pair_a, pair_b)
    return found
