"""How a `DynamicPolicy` composes the policy in force from a bundle and the static fallback.

* `union_policy`: after a bundle's hard expiry, every host gets the pins the fallback and the
  bundle would each apply to it, so neither stale static pins nor a stale bundle alone lock
  users out;
* `apply_kill_switch`: a signed kill switch suspends the pins of the rules it names;
* `bundle_host_rule`: the update channel's own rule, which no bundle can weaken;
* `bucket`: the cohort bucket that decides whether a client is in a bundle's rollout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from certpin.core.hosts import HostPattern, PatternKind
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, KillSwitch, Policy
from certpin.dynamic.bundle import BundleKillSwitch

__all__ = ["BUCKETS", "apply_kill_switch", "bucket", "bundle_host_rule", "union_policy"]

log = logging.getLogger("certpin.dynamic")

BUCKETS = 10_000


def bucket(rollout_id: str, client_id: str) -> int:
    """The client's cohort bucket: SHA-256(rollout_id ‖ client_id) mod 10 000 (UTF-8 bytes)."""
    digest = hashlib.sha256(rollout_id.encode() + client_id.encode()).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def union_policy(a: Policy, b: Policy) -> Policy:
    """For every host, the union of the pins `a` and `b` would each apply (used after hard
    expiry).

    The result has every key of both policies. For each key, the rule gathers the pins of the
    rule each policy applies to the hosts the union gives that key (the key's own host, the
    hosts one label under it, the hosts further down), so a fallback ``**.example.com``
    [P1, P2] and a bundle ``api.example.com`` [P3, P4] give ``api.example.com`` all four pins.
    Pins land in the any-position ``pins`` slot (a leaf/CA slot constraint cannot be expressed
    as a union; this is the permissive side, and it may accept a few more pins than either
    policy alone). Enforcing only if every contributing rule enforces;
    ``unpinned_hosts = "deny"`` only if both deny.
    """
    domains: dict[str, DomainRule] = {}
    keys = dict.fromkeys([*a.domains, *b.domains])
    for key in keys:
        own = [r for r in (a.domains.get(key), b.domains.get(key)) if r is not None]
        contributing = list(own)
        for policy in (a, b):
            for rule in _applied(policy, key, own, keys):
                if rule is not None and rule not in contributing:
                    contributing.append(rule)
        domains[key] = _merge_rules(key, contributing, own)
    deny = a.unpinned_hosts == "deny" and b.unpinned_hosts == "deny"
    return Policy(
        domains=domains,
        version=b.version,
        unpinned_hosts="deny" if deny else "allow",
        source=f"union({a.source}, {b.source})",
    )


def _applied(
    policy: Policy, key: str, own: list[DomainRule], keys: dict[str, None]
) -> list[DomainRule | None]:
    """The rules `policy` applies to the hosts for which the union picks `key`."""
    pattern = HostPattern.parse(key)
    base = pattern.base
    if pattern.kind is PatternKind.ONE_LABEL:  # the hosts one label under `base`
        return [policy.lookup(base, below=1)]
    subtree = pattern.kind is PatternKind.ANY_LABELS or any(r.include_subdomains for r in own)
    if not subtree:  # `base` alone
        return [policy.lookup(base)]
    rules = [policy.lookup(base, below=2)]  # two and more labels under `base`
    if f"*.{base}" not in keys:  # else the hosts one label under it get the "*." key
        rules.append(policy.lookup(base, below=1))
    if pattern.kind is PatternKind.EXACT or base not in keys:  # else the exact key wins
        rules.append(policy.lookup(base))
    return rules


def _merge_rules(pattern: str, rules: list[DomainRule], own: list[DomainRule]) -> DomainRule:
    """One rule accepting every pin of `rules` in any chain position."""
    if len(rules) == 1 and rules[0].pattern == pattern:
        return rules[0]
    pins: tuple[Pin, ...] = ()
    for rule in rules:
        pins += rule.all_pins
    expiries = [r.expires for r in rules]
    return DomainRule(
        pattern=pattern,
        pins=tuple(dict.fromkeys(pins)),
        include_subdomains=any(r.include_subdomains for r in own),
        expires=None if None in expiries else max(e for e in expiries if e is not None),
        enforce=all(r.enforce for r in rules),
        report_uris=tuple(dict.fromkeys(u for r in rules for u in r.report_uris)),
        allow_single_pin=True,
    )


def apply_kill_switch(policy: Policy, kill: BundleKillSwitch) -> Policy:
    """The policy with the kill switch set on the rules it names (only those)."""
    switch = KillSwitch(until=kill.until, reason=kill.reason)
    if kill.domains == "*":
        rules = [dataclasses.replace(r, kill_switch=switch) for r in policy.domains.values()]
        return policy.replace_rules(rules)
    rules = []
    for name in kill.domains:
        rule = policy.domains.get(name)
        if rule is None and not name.startswith("*"):
            # A host covered by a wildcard rule: an exact copy of that rule, killed, so only
            # this host is affected (and it gets the same pins back when the switch ends).
            covering = policy.lookup(name)
            if covering is not None:
                rule = dataclasses.replace(covering, pattern=name, include_subdomains=False)
        if rule is None:
            log.warning("certpin: kill switch names %s, which no rule covers; ignored", name)
            continue
        rules.append(dataclasses.replace(rule, kill_switch=switch))
    return policy.replace_rules(rules)


def bundle_host_rule(host: str, fallback: Policy, policy: Policy) -> DomainRule | None:
    """The bundle host's rule in force when `policy` (from a bundle) is.

    Issue #4: "the bootstrap pins of the fallback, then whatever the last good bundle says
    for that host". A bundle that pins the bundle host with an enforcing rule decides its
    pins (so the channel can rotate *and* drop an old key); a bundle that omits it, or only
    reports on it, cannot unpin it: the fallback's bootstrap rule (plus any pins the bundle
    lists) stays. Enforcement and expiry are never weaker than the fallback's.
    """
    bootstrap = fallback.lookup(host)
    current = policy.lookup(host)
    own = policy.domains.get(host)  # keep what an exact key for the host covers
    subdomains = own is not None and own.include_subdomains
    if bootstrap is None:
        if current is None:
            return None
        return dataclasses.replace(
            current, pattern=host, include_subdomains=subdomains, kill_switch=None
        )
    if current is not None and current.enforce and current.kill_switch is None:
        pins = current.all_pins  # the bundle says how the channel is pinned now
    else:
        pins = bootstrap.all_pins + (() if current is None else current.all_pins)
    return DomainRule(
        pattern=host,
        include_subdomains=subdomains,
        pins=tuple(dict.fromkeys(pins)),
        expires=bootstrap.expires,
        enforce=bootstrap.enforce,
        report_uris=bootstrap.report_uris,
        allow_single_pin=True,
    )
