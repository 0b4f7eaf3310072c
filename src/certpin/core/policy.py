"""Pin policies: which hosts are pinned to which keys, until when, and in which mode.

A `DomainRule` is one key's rule; it validates itself when it is built (`DomainRule.__post_init__`
is the one place a rule is accepted or refused, whether it comes from a file, a bundle or code).
A `Policy` is built from rules: each rule sits under its own canonical pattern, so two keys can
never name one rule. Reading and writing policy documents (TOML/JSON) is `certpin.core.schema`.

Keys may be exact hosts or OkHttp patterns: ``*.example.com`` (exactly one label) and
``**.example.com`` (zero or more labels). When several rules cover a host, the most specific one
applies alone, as in Android's Network Security Config (OkHttp instead unions all matches).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from certpin._errors import PolicyError
from certpin.core.hosts import (
    HostError,
    HostPattern,
    PatternKind,
    _is_ip,
    is_public_suffix,
    normalize_host,
)
from certpin.core.pins import Pin
from certpin.core.schema import policy_from_dict, policy_to_dict, read_policy, rule_to_dict

__all__ = [
    "DomainRule",
    "KillSwitch",
    "Policy",
    "PolicyProvider",
    "as_provider",
]

UnpinnedHosts = Literal["allow", "deny"]


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """A signed, expiring order to stop enforcing a rule's pins (see docs/dynamic.md).

    Set only by `certpin.DynamicPolicy` from a verified bundle; it is not part of the policy
    file schema. While ``now < until`` the verdict is ``KILLED``: CA validation only.

    Attributes:
        until: the instant (UTC) from which the rule's pins apply again.
        reason: the operator's reason, repeated in every log line.
    """

    until: dt.datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DomainRule:
    """The pin rule for one policy key.

    Attributes:
        pattern: the canonical key (``api.example.com``, ``*.example.com``, ``**.example.com``).
        pins: pins any certificate of the verified chain may match. Order is kept as written.
        leaf_pins: if non-empty, the leaf must match one of these.
        ca_pins: if non-empty, a CA certificate (position >= 1) of the verified chain must match.
        include_subdomains: an exact key also covers every subdomain. Default False.
        expires: from this instant (UTC) on the rule is not enforced (CA validation still
            runs, and every such connection is logged). None = never expires.
        enforce: False = report-only. Default True.
        report_uris: where pin-failure reports go (used by the reporter): absolute http(s)
            URLs. Default none.
        allow_single_pin: accept fewer than two distinct pins. Default False.
        kill_switch: if set, pins are not enforced until ``kill_switch.until`` (verdict
            ``KILLED``). None = no kill switch. Never read from or written to policy files.
        tofu: the pins were recorded on first use (`certpin.KnownPins`): a mismatch is
            reported as ``TOFU_MISMATCH`` instead of ``FAILED``. Default False.

    Raises:
        PolicyError: the rule is refused (its ``location`` is ``domains."<pattern>".<field>``
            and ``field`` the field at fault): a pattern not in canonical form, a wildcard or
            ``include_subdomains`` over a public suffix, ``include_subdomains`` on a wildcard,
            no pins, an enforcing slot without a backup pin, a report URI that is not an
            absolute http(s) URL.
    """

    pattern: str
    pins: tuple[Pin, ...] = ()
    leaf_pins: tuple[Pin, ...] = ()
    ca_pins: tuple[Pin, ...] = ()
    include_subdomains: bool = False
    expires: dt.datetime | None = None
    enforce: bool = True
    report_uris: tuple[str, ...] = ()
    allow_single_pin: bool = False
    kill_switch: KillSwitch | None = None
    tofu: bool = False

    def __post_init__(self) -> None:
        problem = _rule_problem(self)
        if problem is not None:
            field_name, message = problem
            loc = f"domains.{json.dumps(self.pattern, ensure_ascii=False)}"
            err = PolicyError(message, location=f"{loc}.{field_name}" if field_name else loc)
            err.field = field_name
            raise err

    @property
    def all_pins(self) -> tuple[Pin, ...]:
        """Every distinct pin of the rule, in first-seen order."""
        return tuple(dict.fromkeys(self.pins + self.leaf_pins + self.ca_pins))

    def covers(self, host: str, *, below: int = 0) -> bool:
        """True when this rule names `host`: its pattern matches it (`HostPattern.matches`), or
        the key is exact with ``include_subdomains`` and `host` is that host or under it.

        Whether the rule *applies* to the host within a policy is `Policy.lookup`'s answer: a
        more specific rule of the same policy may cover the host too.

        Args:
            host: a host name or IP address, in any spelling `normalize_host` accepts.
            below: ask about every host this many labels, whatever they are, under `host`
                (see `HostPattern.matches`). Default 0: `host` itself.

        Raises:
            HostError: `host` is not a host name or IP address.
        """
        pattern = HostPattern.parse(self.pattern)
        if pattern.matches(host, below=below):
            return True
        # include_subdomains makes an exact key name what "**.key" names.
        return self.include_subdomains and _any_labels(pattern.base).matches(host, below=below)

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def to_dict(self, *, defaults: bool = True) -> dict[str, Any]:
        """The rule as a policy-file table; ``defaults=False`` leaves out ``include_subdomains``
        and ``enforce`` when they have their default values (compact: signed bundles)."""
        return rule_to_dict(self, defaults=defaults)


@runtime_checkable
class PolicyProvider(Protocol):
    """Anything that yields the policy in force now (a static `Policy`, a dynamic one…)."""

    def current_policy(self) -> Policy: ...


@dataclass(frozen=True)
class Policy:
    """An immutable, validated pin policy, built from rules.

    Build one with `from_rules` (from `DomainRule` values), `from_file` or `from_dict` (from a
    document). ``Policy(domains=...)`` also works when every key is its rule's pattern (the
    mapping `domains` gives back); any other key is refused, so two keys can never name one
    rule.

    Attributes:
        domains: canonical pattern -> rule (a read-only mapping, in the order given).
        version: the policy's own version number, or None.
        unpinned_hosts: ``"allow"`` (default) lets hosts without a rule through with CA
            validation only; ``"deny"`` refuses them (strict allow-list clients).
        source: where the policy was read from (file name or ``"<dict>"``), for messages.

    Raises:
        PolicyError: a key that is not its rule's pattern.
        TypeError: a value that is not a `DomainRule`.
    """

    domains: Mapping[str, DomainRule]
    version: int | None = None
    unpinned_hosts: UnpinnedHosts = "allow"
    source: str = field(default="<dict>", compare=False)
    # base host -> (exact rule, "*." rule, "**." rule): one probe per label serves all three.
    _table: dict[str, _Entry] = field(init=False, repr=False, compare=False)
    # host -> rule, for the hosts this process actually talks to (bounded; the policy is
    # immutable, so a cached answer never goes stale). The handshake hook asks on every
    # connection, nearly always for the same few hosts.
    _memo: dict[str, DomainRule | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Our own copy: mutating the caller's dict must not desynchronise `domains` from the
        # lookup table.
        rules: dict[str, DomainRule] = {}
        table: dict[str, _Entry] = {}
        for key, rule in self.domains.items():
            if not isinstance(rule, DomainRule):
                raise TypeError(f"domains[{key!r}] must be a DomainRule, got {type(rule).__name__}")
            if key != rule.pattern:
                raise PolicyError(
                    f"rule pattern {rule.pattern!r} does not match its key: a policy's keys "
                    "are its rules' canonical patterns (Policy.from_rules builds them)",
                    source=self.source,
                    location=f"domains.{json.dumps(key, ensure_ascii=False)}",
                )
            rules[key] = rule
            _index(table, rule)
        object.__setattr__(self, "domains", MappingProxyType(rules))
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_memo", {})

    def __hash__(self) -> int:
        return hash((tuple(self.domains.items()), self.version, self.unpinned_hosts))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_rules(
        cls,
        rules: Iterable[DomainRule],
        *,
        version: int | None = None,
        unpinned_hosts: UnpinnedHosts = "allow",
        source: str = "<rules>",
    ) -> Policy:
        """A policy of `rules`, each under its own pattern, in the order given.

        Raises:
            PolicyError: two rules have the same pattern.
        """
        domains: dict[str, DomainRule] = {}
        for rule in rules:
            if rule.pattern in domains:
                raise PolicyError(
                    "two rules for this pattern",
                    source=source,
                    location=f"domains.{json.dumps(rule.pattern, ensure_ascii=False)}",
                )
            domains[rule.pattern] = rule
        return cls(domains=domains, version=version, unpinned_hosts=unpinned_hosts, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read a TOML (``.toml``) or JSON (``.json``, or content starting with ``{``) policy.

        The file is bounded (docs/policy.md, "Limits"): at most
        `certpin.core.schema.MAX_POLICY_SIZE` bytes of UTF-8 (a leading byte-order mark is
        ignored), nested at most 32 levels deep, numbers and bare keys of at most 100
        characters, no repeated JSON key, no JSON NaN/Infinity. Reading it takes time linear
        in its size.

        Raises:
            PolicyError: the file cannot be read, breaks a limit, does not parse, or does not
                validate; the message names the file and the line and column or the field.
        """
        return read_policy(path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Policy:
        """Validate a policy document (the parsed TOML/JSON) into a `Policy`.

        Any object may be given: what no TOML or JSON parser makes (a non-string key, a bytes
        value, an integer beyond 64 bits, nesting deeper than 32 levels) is a `PolicyError`
        naming its location, like any other mistake. Time is linear in the document's size.
        """
        return policy_from_dict(data, source=source)

    def to_dict(self, *, defaults: bool = True) -> dict[str, Any]:
        """A JSON-compatible document that `from_dict` reads back into an equal policy.

        ``defaults=False`` leaves out rule fields that have their default values: the same
        policy in fewer bytes (signed bundles are made this way).
        """
        return policy_to_dict(self, defaults=defaults)

    def replace_rules(self, rules: Iterable[DomainRule], *, version: int | None = None) -> Policy:
        """A new policy with `rules` replacing or adding rules of the same pattern."""
        domains = dict(self.domains)
        for rule in rules:
            domains[rule.pattern] = rule
        return Policy(
            domains=domains,
            version=self.version if version is None else version,
            unpinned_hosts=self.unpinned_hosts,
            source=self.source,
        )

    # -- PolicyProvider ---------------------------------------------------------------------

    def current_policy(self) -> Policy:
        return self

    # -- lookup -------------------------------------------------------------------------------

    def lookup(self, host: str, *, below: int = 0) -> DomainRule | None:
        """The one rule that applies to `host`, or None: the most specific rule that covers it
        (`DomainRule.covers`).

        Precedence, most specific first: an exact key for the host; ``**.host``; then for each
        parent from the nearest: ``*.parent`` (nearest parent only), ``parent`` with
        include_subdomains, ``**.parent``. Cost: a handful of dict lookups, whatever the rule
        count (tests/unit/test_coverage.py checks it against `covers` on every rule).

        Args:
            host: a host name or IP address, in any spelling `normalize_host` accepts.
            below: the rule for the hosts this many labels under `host` whose labels are
                part of no key, i.e. the most specific rule covering *every* host that many
                labels under it (``below=1`` answers for what a certificate's ``*.host``
                stands for). Default 0: `host` itself.

        Raises:
            HostError: `host` is not a host name or IP address.
        """
        if below:
            return next(self.rules_covering(host, below=below), None)
        memo = self._memo
        if host in memo:
            return memo[host]
        rule = next(self.rules_covering(host), None)
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[host] = rule
        return rule

    def rules_covering(self, host: str, *, below: int = 0) -> Iterator[DomainRule]:
        """Every rule that covers `host` (or, with `below`, every host that many labels under
        it), most specific first: `lookup` answers with the first.

        Raises:
            HostError: `host` is not a host name or IP address.
        """
        if below < 0:
            raise ValueError(f"below must be >= 0, got {below}")
        name, is_ip = _canonical(host)
        table = self._table
        if below == 0:
            entry = table.get(name)
            if entry is not None:
                if entry[0] is not None:
                    yield entry[0]
                if entry[2] is not None:
                    yield entry[2]  # "**.host" covers the host itself (zero labels)
        if is_ip:
            return  # an address has no parent domains: "127.0.0.1" is not under "0.1"
        # Walk up from the nearest base that can hold a rule covering the host(s):
        # `distance` labels lie between them and that base.
        distance = max(below, 1)
        base = name
        if below == 0:
            dot = name.find(".")
            if dot == -1:
                return
            base = name[dot + 1 :]
        while True:
            entry = table.get(base)
            if entry is not None:
                exact, one, any_ = entry
                if distance == 1 and one is not None:
                    yield one  # "*." names exactly one label
                if exact is not None and exact.include_subdomains:
                    yield exact
                if any_ is not None:
                    yield any_
            dot = base.find(".")
            if dot == -1:
                return
            base = base[dot + 1 :]
            distance += 1


def as_provider(policy: Policy | PolicyProvider | Callable[[], Policy]) -> Callable[[], Policy]:
    """Turn a Policy, a PolicyProvider or a zero-argument callable into a getter."""
    if isinstance(policy, Policy):
        return policy.current_policy
    if isinstance(policy, PolicyProvider):
        return policy.current_policy
    if callable(policy):
        return policy
    raise TypeError(
        f"policy must be a certpin.Policy, an object with current_policy(), or a callable; "
        f"got {type(policy).__name__}"
    )


_MEMO_SIZE = 4096

# base host -> (exact rule, "*." rule, "**." rule)
_Entry = tuple["DomainRule | None", "DomainRule | None", "DomainRule | None"]


def _index(table: dict[str, _Entry], rule: DomainRule) -> None:
    """Put `rule` in its slot of `table` (patterns are unique keys: no slot is overwritten)."""
    pattern = HostPattern.parse(rule.pattern)
    exact, one, any_ = table.get(pattern.base, (None, None, None))
    if pattern.kind is PatternKind.EXACT:
        exact = rule
    elif pattern.kind is PatternKind.ONE_LABEL:
        one = rule
    else:
        any_ = rule
    table[pattern.base] = (exact, one, any_)


@lru_cache(maxsize=8192)
def _canonical(host: str) -> tuple[str, bool]:
    """(normalised host, is it an IP address): one cache probe per first lookup of a host."""
    name = normalize_host(host)
    return name, _is_ip(name)


def _any_labels(base: str) -> HostPattern:
    return HostPattern(f"**.{base}", PatternKind.ANY_LABELS, base)


# -- the rule checks: the one place a rule is accepted ------------------------------------------


def _rule_problem(rule: DomainRule) -> tuple[str, str] | None:
    """The first thing wrong with a rule, as (field, problem), or None."""
    try:
        pattern = HostPattern.parse(rule.pattern)
    except HostError as exc:
        return "", f"invalid domain: {exc}"
    if pattern.text != rule.pattern:
        return "", f"pattern must be in canonical form {pattern.text!r}"
    if rule.report_uris and not all(
        isinstance(u, str) and is_report_uri(u) for u in rule.report_uris
    ):
        return "report_uris", (
            "must be a list of http(s) URLs (RFC 3986: no spaces, quotes or control "
            f"characters), got {list(rule.report_uris)!r}"
        )
    exact = pattern.kind is PatternKind.EXACT
    include = rule.include_subdomains
    if (include or not exact) and is_public_suffix(pattern.base):
        return (
            "include_subdomains" if include else "",
            f"{pattern.base!r} is a public suffix: pinning all names under it would pin hosts "
            "you do not control",
        )
    if include and not exact:
        return (
            "include_subdomains",
            "include_subdomains only applies to exact keys; use a '**.' key instead",
        )
    if not (rule.pins or rule.leaf_pins or rule.ca_pins):
        return "pins", "no pins: give at least one of pins, leaf_pins, ca_pins"
    if rule.enforce and not rule.allow_single_pin and not rule.tofu:
        for name in ("pins", "leaf_pins", "ca_pins"):
            pins = getattr(rule, name)
            if pins and _independent_pins(pins) < 2:
                return name, _NO_BACKUP.format(name=name)
    return None


_NO_BACKUP = (
    "an enforcing rule needs a backup pin in every slot it uses: {name} has no second distinct "
    "key of the same kind and algorithm (sha256/ and sha512/ of one key count once). A backup "
    "(a spare key, or a CA you could move to) is what lets you rotate without locking clients "
    "out; set allow_single_pin = true to accept the risk"
)


def _independent_pins(pins: tuple[Pin, ...]) -> int:
    """How many pins could be *different keys*: distinct digests within one (algorithm, kind).

    Two pins of different algorithms or kinds may describe the same key or certificate, so
    they are never counted as a backup for each other.
    """
    if len(pins) == 2:  # the usual slot (the live key and its backup): no grouping needed
        a, b = pins
        if a.algorithm == b.algorithm and a.kind is b.kind:
            return 1 if a.digest == b.digest else 2
    groups: dict[tuple[str, str], set[bytes]] = {}
    for pin in pins:
        # .value: hashing a plain str, not the enum (whose __hash__ runs in Python)
        groups.setdefault((pin.algorithm, pin.kind.value), set()).add(pin.digest)
    return max(map(len, groups.values()))


_URI = re.compile(r"https?://[A-Za-z0-9._~:@!$&()*+,;=%/?#\[\]-]+\Z")  # no quotes at all


def is_report_uri(uri: str) -> bool:
    """An absolute http(s) URI of RFC 3986 characters with a host: safe to carry into any export
    format (headers, plists, code) and to POST to."""
    if not _URI.match(uri):
        return False
    try:
        return bool(urlsplit(uri).hostname)
    except ValueError:
        return False
