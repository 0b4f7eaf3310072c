"""Rotation planning: which deployed policy versions would break on the next chain, and the next
policy version.

`plan_rotation` runs `certpin.verdict` of the next (verified) chain for every name on its leaf,
against every policy version still deployed in clients. A version *breaks* when some name's
verdict is an enforced pin mismatch. Report-only mismatches do not break (they are listed as
reports); a denied host (``unpinned_hosts = "deny"``) is refused whatever the chain, so it is
shown but not blamed on the rotation.

`next_version` applies ``--add-pin``/``--drop-pin`` to a policy and bumps its version; the CLI
then lints it and checks it against every domain's live verified chain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certpin._errors import ConfigurationError, PinFormatError, PolicyError
from certpin.core.hosts import HostError, HostPattern
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.core.times import day, iso
from certpin.core.verdict import Verdict
from certpin.lifecycle.chains import (
    ChainCert,
    DomainChain,
    describe_chain,
    split_name,
    verdict_for_name,
)

__all__ = [
    "DeployedVersion",
    "lockouts",
    "RotationPlan",
    "VersionOutcome",
    "next_version",
    "parse_pin_spec",
    "parse_shares",
    "plan_rotation",
    "version_name",
]


@dataclass(frozen=True)
class DeployedVersion:
    """A policy version that clients run, and the share of users on it (None: unknown)."""

    name: str
    path: str
    policy: Policy
    share: float | None = None


@dataclass(frozen=True)
class VersionOutcome:
    """The verdicts of one deployed version on the next chain."""

    version: DeployedVersion
    verdicts: tuple[Verdict, ...]

    @property
    def breaks(self) -> bool:
        """An enforced pin mismatch on the next chain. A *denied* host (no rule, and
        ``unpinned_hosts = "deny"``) is refused whatever the chain, so it is not the rotation's
        doing and does not count."""
        return any(_breaking(v) for v in self.verdicts)

    @property
    def reports(self) -> bool:
        """Report-only rules that would send reports (the connection still works)."""
        return any(v.pin_failure and v.report_only for v in self.verdicts)

    @property
    def stops_breaking(self) -> dt.datetime | None:
        """When the rules that break all expire (clients then stop enforcing), or None (never)."""
        rules = [v.rule for v in self.verdicts if _breaking(v)]
        if not rules or any(r is None or r.expires is None for r in rules):
            return None
        return max(r.expires for r in rules if r is not None and r.expires is not None)


@dataclass(frozen=True)
class RotationPlan:
    """The result of `plan_rotation`."""

    chain: tuple[bytes, ...]
    names: tuple[str, ...]
    outcomes: tuple[VersionOutcome, ...]
    certs: tuple[ChainCert, ...] = field(default=())

    @property
    def breaking(self) -> list[VersionOutcome]:
        return [o for o in self.outcomes if o.breaks]

    @property
    def broken_share(self) -> float | None:
        """The share of users that would break, or None when a breaking version has no share."""
        shares = [o.version.share for o in self.breaking]
        if any(s is None for s in shares):
            return None
        return sum(s for s in shares if s is not None)

    def playbook(self, next_chain_file: str = "NEW.pem") -> list[str]:
        """The safe steps, in order, as lines of text."""
        leaf = self.certs[0]
        latest = max(self.outcomes, key=_version_order).version
        host = next((n for n in self.names if not n.startswith("*.")), self.names[0])
        key = _policy_key_for(latest.policy, host) or host
        add = f"certpin rotate next {latest.path} --add-pin {leaf.pin}:{key} --connect -o NEXT.toml"
        if not self.breaking:
            return [
                "1. Switch now: every deployed version accepts the next chain.",
                "2. Once the new chain is served, drop the pins of the old key and pin a fresh "
                "spare: `certpin keygen --out spare/` then `certpin rotate next POLICY "
                f"--drop-pin OLD_PIN --add-pin SPARE_PIN --chain {key}={next_chain_file}`.",
            ]
        names = ", ".join(_describe_version(o) for o in self.breaking)
        lines = [
            f"1. Add the next key's pin now: {leaf.pin} (the leaf key of {next_chain_file}, "
            f"{leaf.key_type}), and ship that version:",
            f"     {add}",
            f"2. Do not switch yet: {names} would break. Switch when no client runs a version "
            "without the new pin: re-run `certpin rotate plan` with the versions still deployed "
            "until it exits 0.",
        ]
        recover = [o.stops_breaking for o in self.breaking]
        if all(r is not None for r in recover):
            last = max(r for r in recover if r is not None)
            lines.append(
                f"   Without updates, the breaking versions' pins expire on {day(last)}: "
                "switching after that date is safe for them too."
            )
        else:
            lines.append(
                "   A breaking version has no `expires`: its clients break until they update."
            )
        lines.append(
            "3. After the switch, drop the old key's pin once no deployed version depends on it, "
            f"and pin a fresh spare (`certpin keygen`): `certpin rotate next POLICY "
            f"--drop-pin OLD_PIN --add-pin SPARE_PIN --chain {key}={next_chain_file}`."
        )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "chain": [
                {"position": c.position, "pin": str(c.pin), "subject": c.subject, "role": c.role}
                for c in self.certs
            ],
            "versions": [
                {
                    "name": o.version.name,
                    "path": o.version.path,
                    "share": o.version.share,
                    "breaks": o.breaks,
                    "reports": o.reports,
                    "stops_breaking": iso(o.stops_breaking),
                    "verdicts": [
                        {
                            "host": v.host,
                            "status": v.status.value,
                            "allowed": v.allowed,
                            "rule": v.noted_hostname,
                            "matched_pin": None if v.matched_pin is None else str(v.matched_pin),
                            "reason": v.reason,
                        }
                        for v in o.verdicts
                    ],
                }
                for o in self.outcomes
            ],
            "breaking": [o.version.name for o in self.breaking],
            "broken_share": self.broken_share,
            "safe": not self.breaking,
            "playbook": self.playbook(),
        }


def _breaking(result: Verdict) -> bool:
    return result.pin_failure and not result.report_only


def _version_order(outcome: VersionOutcome) -> tuple[int, int]:
    version = outcome.version.policy.version
    return (0 if version is None else 1, -1 if version is None else version)


def _describe_version(outcome: VersionOutcome) -> str:
    share = outcome.version.share
    return outcome.version.name + ("" if share is None else f" ({share:.0%} of users)")


def _policy_key_for(policy: Policy, name: str) -> str | None:
    host, below = split_name(name)
    try:
        rule = policy.lookup(host, below=below)
    except ValueError:
        return None
    return None if rule is None else rule.pattern


def version_name(policy: Policy, path: str) -> str:
    """``v<version>`` from the policy's ``version`` field, else the file name without suffix."""
    return f"v{policy.version}" if policy.version is not None else Path(path).stem


def parse_shares(specs: Sequence[str], versions: Sequence[DeployedVersion]) -> dict[str, float]:
    """``NAME=SHARE`` items (``0.12`` or ``12%``) -> {version name: share}.

    NAME may be the version name (``v41``), the bare version number or the file name/stem.

    Raises:
        ConfigurationError: bad syntax, a share outside 0..1, an unknown version, or shares
            summing to more than 1.
    """
    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigurationError(f"--share {spec!r}: expected VERSION=SHARE, e.g. v41=0.12")
        text = value.strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ConfigurationError(f"--share {spec!r}: {text!r} is not a number") from None
        if not 0 <= share <= 1:
            raise ConfigurationError(f"--share {spec!r}: a share is between 0 and 1 (or 0-100%)")
        match = [v for v in versions if name.strip() in _aliases(v)]
        if not match:
            known = ", ".join(v.name for v in versions)
            raise ConfigurationError(
                f"--share {spec!r}: no deployed version {name.strip()!r} (known: {known})"
            )
        out[match[0].name] = share
    if sum(out.values()) > 1.0 + 1e-9:
        raise ConfigurationError(f"--share: the shares add up to {sum(out.values()):g}, over 1")
    return out


def _aliases(version: DeployedVersion) -> set[str]:
    names = {version.name, version.path, Path(version.path).name, Path(version.path).stem}
    if version.policy.version is not None:
        names.add(str(version.policy.version))
    return names


def plan_rotation(
    deployed: Sequence[DeployedVersion],
    chain: Sequence[bytes],
    names: Sequence[str],
    now: dt.datetime | None = None,
) -> RotationPlan:
    """The verdict of the next verified `chain` for every leaf name, per deployed version.

    Args:
        deployed: the versions clients run.
        chain: the next chain, verified (leaf first, root last).
        names: the leaf's names (SubjectAltName); a ``*.base`` name is checked for the hosts
            one label under base that have no key of their own (`verdict_for_name`).
        now: the time to judge rule expiry at (default: now).
    """
    now = now or dt.datetime.now(dt.UTC)
    outcomes = tuple(
        VersionOutcome(d, tuple(verdict_for_name(n, chain, d.policy, now) for n in names))
        for d in deployed
    )
    return RotationPlan(tuple(chain), tuple(names), outcomes, tuple(describe_chain(chain)))


# -- rotate next -------------------------------------------------------------------------------


def parse_pin_spec(text: str, option: str) -> tuple[Pin, str | None]:
    """``PIN`` or ``PIN:DOMAIN`` -> (pin, canonical policy key or None).

    A hex fingerprint has colons of its own: the whole text is tried as a pin first.
    """
    try:
        return Pin.parse(text), None
    except PinFormatError:
        pass
    pin_text, sep, domain = text.rpartition(":")
    if not sep:
        raise ConfigurationError(f"{option} {text!r}: not a pin (expected PIN or PIN:DOMAIN)")
    try:
        pin = Pin.parse(pin_text)
    except PinFormatError as exc:
        raise ConfigurationError(f"{option} {text!r}: {exc}") from None
    try:
        key = HostPattern.parse(domain).text
    except HostError as exc:
        raise ConfigurationError(f"{option} {text!r}: invalid domain: {exc}") from None
    return pin, key


def next_version(
    policy: Policy,
    add: Sequence[tuple[Pin, str | None]] = (),
    drop: Sequence[tuple[Pin, str | None]] = (),
    domain: str | None = None,
) -> Policy:
    """`policy` with pins added (to ``pins``) and dropped (from every slot), version + 1.

    A pin without a domain applies to `domain`; when `domain` is None too, an added pin goes to
    every rule, and a dropped pin leaves every rule that has it (an error only if none has it).

    Raises:
        ConfigurationError: an unknown domain, a pin added twice or dropped where absent.
        PolicyError: the result does not validate (e.g. an enforcing rule left with one pin).
    """
    default = None if domain is None else _known_key(policy, domain, "--domain")
    label = f"{policy.source} (next version)"
    rules: dict[str, DomainRule] = dict(policy.domains)

    def targets(key: str | None, option: str, pin: Pin) -> list[str]:
        key = key or default
        if key is None:
            return list(rules)
        return [_known_key(policy, key, f"{option} {pin}:{key}")]

    for pin, key in add:
        for target in targets(key, "--add-pin", pin):
            rule = rules[target]
            if pin in rule.all_pins:
                raise ConfigurationError(f"--add-pin {pin}: {target} already pins it")
            rules[target] = _replace(rule, label, pins=(*rule.pins, pin))
    for pin, key in drop:
        chosen = targets(key, "--drop-pin", pin)
        if key is None and default is None:
            # No domain given: drop it wherever it is pinned; an error only if nowhere.
            chosen = [k for k in chosen if pin in rules[k].all_pins]
            if not chosen:
                raise ConfigurationError(f"--drop-pin {pin}: no rule of {policy.source} pins it")
        for target in chosen:
            rule = rules[target]
            if pin not in rule.all_pins:
                raise ConfigurationError(f"--drop-pin {pin}: {target} does not pin it")
            rules[target] = _replace(
                rule,
                label,
                pins=tuple(p for p in rule.pins if p != pin),
                leaf_pins=tuple(p for p in rule.leaf_pins if p != pin),
                ca_pins=tuple(p for p in rule.ca_pins if p != pin),
            )
    bumped = Policy(
        domains=rules,
        version=(policy.version or 0) + 1,
        unpinned_hosts=policy.unpinned_hosts,
        source=policy.source,
    )
    # Re-validate the document: the same checks a client runs when it loads the file.
    return Policy.from_dict(bumped.to_dict(), source=label)


def _known_key(policy: Policy, key: str, option: str) -> str:
    try:
        canonical = HostPattern.parse(key).text
    except HostError as exc:
        raise ConfigurationError(f"{option}: invalid domain: {exc}") from None
    if canonical not in policy.domains:
        known = ", ".join(policy.domains) or "none"
        raise ConfigurationError(
            f"{option}: {canonical!r} is not a key of {policy.source} (keys: {known})"
        )
    return canonical


def _replace(rule: DomainRule, source: str, **changes: Any) -> DomainRule:
    from dataclasses import replace

    try:
        return replace(rule, **changes)
    except PolicyError as exc:  # DomainRule validates itself: say which file and rule
        raise PolicyError(exc.problem, source=source, location=exc.location) from None


def lockouts(
    policy: Policy, chains: Mapping[str, DomainChain], now: dt.datetime | None = None
) -> list[Verdict]:
    """The verdicts of `policy` on each available live chain that would not be allowed."""
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for chain in chains.values():
        if chain.available:
            result = verdict_for_name(chain.host, chain.chain, policy, now)
            if not result.allowed:  # a report-only mismatch reports, it does not lock out
                out.append(result)
    return out
