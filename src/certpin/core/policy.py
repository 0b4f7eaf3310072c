"""Pin policies: which hosts are pinned to which keys, until when, and in which mode.

Schema v1 (TOML shown; JSON has the same shape)::

    version = 42                        # optional integer, used by rotation planning and bundles
    unpinned_hosts = "allow"            # or "deny": hosts matching no rule are refused

    [domains."api.example.com"]
    pins = ["sha256/…", "sha256/…"]     # any certificate in the verified chain may match
    leaf_pins = ["sha256/…"]            # optional: must match the leaf (Apple ATS semantics)
    ca_pins = ["sha256/…"]              # optional: must match a CA certificate in the chain
    include_subdomains = false
    expires = 2027-06-30                # from 2027-06-30T00:00:00Z on, the rule is not enforced
    enforce = true                      # false = report-only: never blocks, always reports
    report_uris = ["https://…"]
    allow_single_pin = false            # true = accept one pin (no backup); see below

Keys may be exact hosts or OkHttp patterns: ``*.example.com`` (exactly one label) and
``**.example.com`` (zero or more labels). When several rules match a host, the most specific one
applies alone, as in Android's Network Security Config (OkHttp instead unions all matches).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from certpin._errors import CertpinError, PinFormatError, PolicyError
from certpin.core.hosts import (
    _EXACT,
    _ONE_LABEL,
    HostError,
    Pattern,
    PatternKind,
    _is_ip,
    _parse_pattern,
    all_canonical_names,
    is_canonical_name,
    is_public_suffix,
    normalize_host,
)
from certpin.core.pins import Pin, _parse, _parse_cached, all_canonical_sha256
from certpin.core.toml import (
    DocumentError,
    check_structure,
    key_text,
    parse_json,
    parse_toml,
    read_document,
    shown,
)

__all__ = [
    "MAX_POLICY_SIZE",
    "DomainRule",
    "KillSwitch",
    "Policy",
    "PolicyProvider",
    "as_provider",
]

SCHEMA_VERSION = 1
#: the largest policy file `Policy.from_file` reads: about 80 000 two-pin domains in TOML
#: (docs/policy.md, "Limits").
MAX_POLICY_SIZE = 16 * 1024 * 1024
_MAX_VERSION = 2**63 - 1
UnpinnedHosts = Literal["allow", "deny"]

_DOMAIN_FIELDS = (
    "pins",
    "leaf_pins",
    "ca_pins",
    "include_subdomains",
    "expires",
    "enforce",
    "report_uris",
    "allow_single_pin",
)
_TOP_FIELDS = ("schema", "version", "unpinned_hosts", "domains")


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
        report_uris: where pin-failure reports go (used by the reporter).
        allow_single_pin: accept fewer than two distinct pins. Default False.
        kill_switch: if set, pins are not enforced until ``kill_switch.until`` (verdict
            ``KILLED``). None = no kill switch. Never read from or written to policy files.
        tofu: the pins were recorded on first use (`certpin.KnownPins`): a mismatch is
            reported as ``TOFU_MISMATCH`` instead of ``FAILED``. Default False.
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

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def to_dict(self, *, defaults: bool = True) -> dict[str, Any]:
        """The rule as a policy-file table; ``defaults=False`` leaves out ``include_subdomains``
        and ``enforce`` when they have their default values (compact: signed bundles)."""
        out: dict[str, Any] = {}
        for name in ("pins", "leaf_pins", "ca_pins"):
            pins = getattr(self, name)
            if pins:
                out[name] = [str(p) for p in pins]
        if defaults or self.include_subdomains:
            out["include_subdomains"] = self.include_subdomains
        if self.expires is not None:
            out["expires"] = _format_expiry(self.expires)
        if defaults or not self.enforce:
            out["enforce"] = self.enforce
        if self.report_uris:
            out["report_uris"] = list(self.report_uris)
        if self.allow_single_pin:
            out["allow_single_pin"] = True
        return out


@runtime_checkable
class PolicyProvider(Protocol):
    """Anything that yields the policy in force now (a static `Policy`, a dynamic one…)."""

    def current_policy(self) -> Policy: ...


@dataclass(frozen=True)
class Policy:
    """An immutable, validated pin policy. Build with `from_file` / `from_dict`.

    Attributes:
        domains: canonical pattern -> rule.
        version: the policy's own version number, or None.
        unpinned_hosts: ``"allow"`` (default) lets hosts without a rule through with CA
            validation only; ``"deny"`` refuses them (strict allow-list clients).
        source: where the policy was read from (file name or ``"<dict>"``), for messages.
    """

    domains: Mapping[str, DomainRule]
    version: int | None = None
    unpinned_hosts: UnpinnedHosts = "allow"
    source: str = field(default="<dict>", compare=False)
    # base host -> (exact rule, "*." rule, "**." rule): one probe per label serves all three.
    _table: dict[str, _Entry] = field(init=False, repr=False, compare=False)
    # The last two labels of every base that can match a *subdomain* ("*.", "**.",
    # include_subdomains; never fewer labels: one label is a public suffix, which cannot carry
    # those): a name whose own last two labels are not here has no parent worth probing, which
    # is what most unrelated hosts look like.
    _tails: frozenset[str] = field(init=False, repr=False, compare=False)
    # host -> rule, for the hosts this process actually talks to (bounded; the policy is
    # immutable, so a cached answer never goes stale). The handshake hook asks on every
    # connection, nearly always for the same few hosts.
    _memo: dict[str, DomainRule | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Keep our own copy: mutating the caller's dict must not desynchronise `domains` from
        # the lookup table.
        domains: dict[str, DomainRule | _Deferred] = {}
        table: dict[str, _Entry] = {}
        for key, rule in self.domains.items():
            _index_rule(table, key, rule)
            domains[key] = rule
        self._install(domains, table)

    @classmethod
    def _checked(
        cls,
        domains: dict[str, DomainRule | _Deferred],
        table: dict[str, _Entry],
        version: int | None,
        unpinned_hosts: UnpinnedHosts,
        source: str,
        tails: frozenset[str] | None = None,
    ) -> Policy:
        """A policy from parts `from_dict` has just validated and indexed (``domains`` and
        ``table`` are its own): skips `__post_init__`, which would parse every key again.
        ``tails``: the `_tails` when the caller knows them (else computed from ``table``)."""
        self = object.__new__(cls)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "unpinned_hosts", unpinned_hosts)
        object.__setattr__(self, "source", source)
        self._install(domains, table, tails)
        return self

    def _install(
        self,
        domains: dict[str, DomainRule | _Deferred],
        table: dict[str, _Entry],
        tails: frozenset[str] | None = None,
    ) -> None:
        object.__setattr__(self, "domains", _Rules(domains))
        object.__setattr__(self, "_table", table)
        if tails is None:
            walkable = [
                base
                for base, (exact, one, any_) in table.items()
                if one is not None
                or any_ is not None
                or (exact is not None and exact.include_subdomains)
            ]
            tails = frozenset(_last_two_labels(b) for b in walkable)
        object.__setattr__(self, "_tails", tails)
        object.__setattr__(self, "_memo", {})

    def __hash__(self) -> int:
        return hash((tuple(self.domains.items()), self.version, self.unpinned_hosts))

    # -- PolicyProvider ---------------------------------------------------------------------

    def current_policy(self) -> Policy:
        return self

    # -- lookup -------------------------------------------------------------------------------

    def lookup(self, host: str) -> DomainRule | None:
        """The one rule that applies to `host`, or None.

        Precedence, most specific first: an exact key for the host; ``**.host``; then for each
        parent from the nearest: ``*.parent`` (nearest parent only), ``parent`` with
        include_subdomains, ``**.parent``. Cost: a handful of dict lookups, whatever the rule
        count.
        """
        memo = self._memo
        if host in memo:
            return memo[host]
        rule = self._find(host)
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[host] = rule
        return rule

    def _find(self, host: str) -> DomainRule | None:
        name, is_ip = _canonical(host)
        # An exact key for the host wins over everything (a host name never equals a wildcard
        # key: normalisation refuses "*"). Deferred rules are only ever exact keys.
        rules: _Rules = self.domains  # type: ignore[assignment]
        exact = rules._entries.get(name)
        if exact is not None:
            return rules[name] if isinstance(exact, tuple) else exact
        table = self._table
        entry = table.get(name)
        if entry is not None:
            if entry[0] is not None:
                return entry[0]
            if entry[2] is not None:
                return entry[2]  # "**.host" covers the host itself (zero labels)
        if is_ip:
            # An IP address has no parent domains: "127.0.0.1" must not match "**.0.1".
            return None
        last = name.rfind(".")
        if last == -1 or name[name.rfind(".", 0, last) + 1 :] not in self._tails:
            return None  # no parent, or not under any site with a wildcard rule
        dot = name.find(".")
        entry = table.get(name[dot + 1 :])  # the nearest parent: "*." applies here only
        if entry is not None:
            if entry[1] is not None:
                return entry[1]
            if entry[0] is not None and entry[0].include_subdomains:
                return entry[0]
            if entry[2] is not None:
                return entry[2]
        get = table.get
        while (dot := name.find(".", dot + 1)) != -1:
            entry = get(name[dot + 1 :])
            if entry is not None:
                exact = entry[0]
                if exact is not None and exact.include_subdomains:
                    return exact
                if entry[2] is not None:
                    return entry[2]
        return None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read a TOML (``.toml``) or JSON (``.json``, or content starting with ``{``) policy.

        The file is bounded (docs/policy.md, "Limits"): at most `MAX_POLICY_SIZE` bytes of UTF-8
        (a leading byte-order mark is ignored), nested at most 32 levels deep, numbers and bare
        keys of at most 100 characters, no repeated JSON key, no JSON NaN/Infinity. Reading it
        takes time linear in its size.

        Raises:
            PolicyError: the file cannot be read, breaks a limit, does not parse, or does not
                validate; the message names the file and the line and column or the field.
        """
        p = Path(path)
        source = str(path)
        try:
            text = read_document(p, MAX_POLICY_SIZE)
        except OSError as exc:
            raise PolicyError(f"cannot read policy: {exc.strerror or exc}", source=source) from None
        except DocumentError as exc:
            where = f"{exc.where}: " if exc.where else ""
            raise PolicyError(f"{where}policy {exc.problem}", source=source) from None
        suffix = p.suffix.lower()
        is_json = suffix == ".json" or (suffix != ".toml" and text.lstrip()[:1] == "{")
        try:
            data = parse_json(text) if is_json else parse_toml(text)
        except DocumentError as exc:
            kind = "JSON" if is_json else "TOML"
            if exc.path:  # TOML nested too deeply through table headers or dotted keys
                raise PolicyError(exc.problem, source=source, location=exc.path) from None
            if not exc.syntax:  # a limit, at a line and column
                raise PolicyError(str(exc), source=source) from None
            at = f" at {exc.where}" if exc.line is not None else ""
            raise PolicyError(f"invalid {kind}{at}: {exc.problem}", source=source) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Policy:
        """Validate a policy document (the parsed TOML/JSON) into a `Policy`.

        Any object may be given: what no TOML or JSON parser makes (a non-string key, a bytes
        value, an integer beyond 64 bits, nesting deeper than 32 levels) is a `PolicyError`
        naming its location, like any other mistake. Time is linear in the document's size.
        """
        if not isinstance(data, Mapping):
            raise PolicyError("a policy must be a table/object at the top level", source=source)
        for key in data:
            if not isinstance(key, str):
                raise PolicyError(f"a key must be a string, got {shown(key)}", source=source)
        _reject_unknown(data, _TOP_FIELDS, source, "")
        schema = data.get("schema", SCHEMA_VERSION)
        if isinstance(schema, bool) or not isinstance(schema, int) or schema != SCHEMA_VERSION:
            raise PolicyError(
                f"unsupported schema {shown(schema)}; this certpin reads schema {SCHEMA_VERSION}",
                source=source,
                location="schema",
            )
        version = data.get("version")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 0
        ):
            raise PolicyError(
                f"version must be a non-negative integer, got {shown(version)}",
                source=source,
                location="version",
            )
        if version is not None and version > _MAX_VERSION:
            raise PolicyError(
                f"version must fit in 64 bits (at most {_MAX_VERSION}), got {shown(version)}",
                source=source,
                location="version",
            )
        unpinned = data.get("unpinned_hosts", "allow")
        if unpinned not in ("allow", "deny"):
            raise PolicyError(
                f'must be "allow" or "deny", got {shown(unpinned)}',
                source=source,
                location="unpinned_hosts",
            )
        raw_domains = data.get("domains", {})
        if not isinstance(raw_domains, Mapping):
            raise PolicyError("must be a table of domain rules", source=source, location="domains")
        with _no_gc:
            try:
                domains, table = _load_deferring(raw_domains, source)
            except Exception:  # noqa: BLE001 - deliberately anything: the next lines decide
                # Anything unusual, valid or not: the rule-by-rule path decides (and names the
                # first problem in document order, with the exception it would raise). Before
                # it, what no TOML/JSON parser makes is refused, so that its messages (which
                # repr values) and checks only ever meet strings, lists, tables, 64-bit numbers
                # and dates, nested at most 32 levels deep.
                try:
                    check_structure(raw_domains, depth=2, path="domains")
                except DocumentError as exc:
                    raise PolicyError(exc.problem, source=source, location=exc.path) from None
                domains, table = _load_rules(raw_domains, source)
        return cls._checked(domains, table, version, unpinned, source)

    def to_dict(self, *, defaults: bool = True) -> dict[str, Any]:
        """A JSON-compatible document that `from_dict` reads back into an equal policy.

        ``defaults=False`` leaves out rule fields that have their default values: the same
        policy in fewer bytes (signed bundles are made this way).
        """
        out: dict[str, Any] = {"schema": SCHEMA_VERSION}
        if self.version is not None:
            out["version"] = self.version
        out["unpinned_hosts"] = self.unpinned_hosts
        out["domains"] = {k: r.to_dict(defaults=defaults) for k, r in self.domains.items()}
        return out

    def replace_rules(self, rules: Iterable[DomainRule], *, version: int | None = None) -> Policy:
        """A new policy with `rules` replacing or adding rules of the same pattern."""
        # Incremental: the rules kept are already indexed (a 1 000-rule policy is not parsed
        # again to change one rule, as DynamicPolicy does on every bundle it installs), and
        # deferred rules stay deferred.
        domains = dict(self.domains._entries)  # type: ignore[attr-defined]
        table = dict(self._table)
        tails = set(self._tails)
        for rule in rules:
            kind, base = _index_rule(table, rule.pattern, rule)
            domains[rule.pattern] = rule
            if kind is not _EXACT or rule.include_subdomains:
                tails.add(_last_two_labels(base))
        # A replaced rule's tail may stay: a superset of the tails is still correct (a tail only
        # lets the parent walk run for names under it).
        return Policy._checked(
            domains,
            table,
            self.version if version is None else version,
            self.unpinned_hosts,
            self.source,
            frozenset(tails),
        )


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

#: A rule validated at load and built on first use: its canonical ``sha256/`` pin texts. Only
#: for the commonest entry of large policies and bundles, ``"host": {"pins": [...]}`` with a
#: canonical exact host (`_load_deferring`); it means exactly the rule
#: ``DomainRule(host, pins=tuple(map(Pin.parse, texts)))``.
_Deferred = tuple[str, ...]


class _Rules(Mapping[str, DomainRule]):
    """`Policy.domains`: a read-only mapping of canonical pattern -> `DomainRule`.

    Every rule in it has been fully validated when the policy was loaded; the ones loaded as
    `_Deferred` pin texts become `DomainRule` objects the first time they are read (the rule a
    handshake looks up, or all of them for code that iterates). A client that loads a 1 000-rule
    bundle and talks to three hosts builds three rules. Building is idempotent, so threads may
    race on it harmlessly.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[str, DomainRule | _Deferred]) -> None:
        self._entries = entries

    def __getitem__(self, key: str) -> DomainRule:
        rule = self._entries[key]
        if not isinstance(rule, tuple):
            return rule
        built = _deferred_rule(key, rule)
        self._entries[key] = built
        return built

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._entries)

    # What a MappingProxyType (this mapping's earlier type) also offered: plain-dict copies.
    def copy(self) -> dict[str, DomainRule]:
        return dict(self.items())

    def __or__(self, other: Mapping[str, DomainRule]) -> dict[str, DomainRule]:
        return {**self, **other}

    def __ror__(self, other: Mapping[str, DomainRule]) -> dict[str, DomainRule]:
        return {**other, **self}

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{k!r}: {v!r}' for k, v in self.items())}}}"


def _deferred_rule(key: str, pins: _Deferred) -> DomainRule:
    return _RuleBuilder(
        key, tuple(map(_parse_cached, pins)), (), (), False, None, True, (), False
    ).done()


class _RuleByRule(CertpinError):
    """The document needs `_load_rules` (a case `_load_deferring` does not decide)."""


def _load_deferring(
    raw_domains: Mapping[str, Any], source: str
) -> tuple[dict[str, DomainRule | _Deferred], dict[str, _Entry]]:
    """The ``domains`` table of a policy document, deferring the commonest rules.

    ``"host": {"pins": [p1, p2, ...]}`` with a canonical host and at least two distinct
    canonical ``sha256/`` pins is checked in bulk (C-level passes over all the hosts and all the
    distinct pin texts, once) and kept as its pin texts; every other rule is parsed as
    `_load_rules` would. Raises `_RuleByRule` (or the error of a rule) whenever it cannot accept
    the document exactly as `_load_rules` would; the caller then runs `_load_rules`, so what is
    accepted, what is refused and every message are those of the rule-by-rule path. Saves
    ≈ 80 % of a 1 000-domain bundle's load.
    """
    if type(raw_domains) is not dict:
        raise _RuleByRule
    domains: dict[str, DomainRule | _Deferred] = {}
    table: dict[str, _Entry] = {}
    texts: list[Any] = []
    for key, body in raw_domains.items():
        if type(body) is dict and len(body) == 1 and type(key) is str:
            pins = body.get("pins")
            if type(pins) is list and len(pins) >= 2 and (pins[0] != pins[1] or len(set(pins)) > 1):
                domains[key] = tuple(pins)  # a copy: the caller's document may change later
                texts += pins
                continue
        rule = _plain_rule(key, body)
        if rule is None:
            rule, kind, base = _parse_rule(key, body, source)
        else:
            kind, base = _EXACT, key
        domains[rule.pattern] = rule
        _index(table, kind, base, rule)
    if len(domains) != len(raw_domains):
        raise _RuleByRule  # two keys named one rule
    if texts:
        deferred = [k for k, v in domains.items() if type(v) is tuple]
        if not (all_canonical_names(deferred) and all_canonical_sha256(set(texts))):
            return _settle(domains, table, source)
    return domains, table


def _settle(
    domains: dict[str, DomainRule | _Deferred], table: dict[str, _Entry], source: str
) -> tuple[dict[str, DomainRule | _Deferred], dict[str, _Entry]]:
    """After a failed bulk check: parse the deferred entries that fail it one by one (an IDN or
    upper-case key, another pin notation... or an error), keep the others deferred.

    Every rule not deferred has parsed, so the first error in document order is that of the
    first bad deferred entry, which `_parse_rule` raises here as the rule-by-rule path would.
    """
    settled: dict[str, DomainRule | _Deferred] = {}
    for key, value in domains.items():
        if isinstance(value, tuple) and not (
            is_canonical_name(key) and all_canonical_sha256(set(value))
        ):
            rule, kind, base = _parse_rule(key, {"pins": list(value)}, source)
            _index(table, kind, base, rule)
            key, value = rule.pattern, rule
        settled[key] = value
    if len(settled) != len(domains):
        raise _RuleByRule  # a parsed key names the same rule as another key
    return settled, table


def _load_rules(
    raw_domains: Mapping[str, Any], source: str
) -> tuple[dict[str, DomainRule | _Deferred], dict[str, _Entry]]:
    """The ``domains`` table of a policy document, every rule parsed and built in order."""
    domains: dict[str, DomainRule | _Deferred] = {}
    table: dict[str, _Entry] = {}
    for key, body in raw_domains.items():
        rule = _plain_rule(key, body)
        if rule is None:
            rule, kind, base = _parse_rule(key, body, source)
        else:
            kind, base = _EXACT, key
        if rule.pattern in domains:
            first = next(k for k in raw_domains if _parse_pattern(k).text == rule.pattern)
            raise PolicyError(
                f"names the same rule as {first!r} (both are {rule.pattern!r} after normalisation)",
                source=source,
                location=_loc(key),
            )
        domains[rule.pattern] = rule
        _index(table, kind, base, rule)
    return domains, table


class _GCPause:
    """``with _no_gc:`` — no cyclic garbage collection while a large document is loaded.

    Loading a 1 000-domain policy allocates thousands of container objects that all stay
    alive; each allocation burst triggers collections that scan them, and a full collection
    scans the whole process heap (≈ 40 % of a bundle's load time at client start). Nothing
    loaded here forms a reference cycle, so pausing the collector loses nothing; it is
    re-enabled as soon as the outermost load (over all threads) ends, and only if it was on
    when the first one began (a program that switched it off keeps it off). Reference counting
    frees garbage as usual meanwhile. Mercurial's ``util.nogc`` does the same.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()


_no_gc = _GCPause()

# base host -> (exact rule, "*." rule, "**." rule)
_Entry = tuple["DomainRule | None", "DomainRule | None", "DomainRule | None"]


def _index_rule(table: dict[str, _Entry], key: str, rule: DomainRule) -> tuple[PatternKind, str]:
    """Index `rule` under `key` (which must be its canonical pattern); its (kind, base)."""
    pattern = Pattern.parse(key)
    if pattern.text != rule.pattern:
        raise PolicyError(f"rule pattern {rule.pattern!r} does not match its key", location=key)
    _index(table, pattern.kind, pattern.base, rule)
    return pattern.kind, pattern.base


def _index(table: dict[str, _Entry], kind: PatternKind, base: str, rule: DomainRule) -> None:
    """Put `rule` in its slot of `table` (keys are unique, so no slot is ever overwritten)."""
    entry = table.get(base)
    if kind is _EXACT:
        table[base] = (rule, None, None) if entry is None else (rule, entry[1], entry[2])
    elif kind is _ONE_LABEL:
        table[base] = (None, rule, None) if entry is None else (entry[0], rule, entry[2])
    else:
        table[base] = (None, None, rule) if entry is None else (entry[0], entry[1], rule)


def _last_two_labels(name: str) -> str:
    return name[name.rfind(".", 0, name.rfind(".")) + 1 :]


@lru_cache(maxsize=8192)
def _canonical(host: str) -> tuple[str, bool]:
    """(normalised host, is it an IP address): one cache probe per lookup."""
    name = normalize_host(host)
    return name, _is_ip(name)


def _normalize_cached(host: str) -> str:
    return _canonical(host)[0]


# -- parsing helpers ------------------------------------------------------------------------------


def _reject_unknown(data: Mapping[str, Any], known: tuple[str, ...], source: str, loc: str) -> None:
    for key in data:
        if key not in known:
            close = get_close_matches(str(key), known, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
            )
            # Quoted unless bare: a key of a file may hold a new line or a terminal escape.
            where = f"{loc}.{key_text(key)}" if loc else key_text(key)
            raise PolicyError(f"unknown field{hint}", source=source, location=where)


_DOMAIN_FIELD_SET = frozenset(_DOMAIN_FIELDS)
_MISSING: Any = object()


def _loc(key: Any) -> str:
    """The error location of a domain key (built only when there is an error to report)."""
    return f"domains.{json.dumps(key, ensure_ascii=False)}"


_PLAIN_FIELDS = frozenset(("pins", "include_subdomains", "enforce"))


def _plain_rule(key: Any, body: Any) -> DomainRule | None:
    """The commonest entry, checked and built in one go, or None for the general path.

    Commonest: a host name already in canonical form (no wildcard, no IDN) whose rule has
    ``pins`` and at most ``include_subdomains`` / ``enforce``, all well-formed and passing the
    rule checks. Anything else, valid or not, returns None and goes through `_parse_rule`, which
    builds the same rule for everything accepted here (tests/unit/test_fast_paths.py) and
    reports what is wrong with the rest. Saves ≈ 40 % per rule of a large bundle.
    """
    if (
        type(body) is not dict
        or type(key) is not str
        or not _PLAIN_FIELDS.issuperset(body)
        or not is_canonical_name(key)
    ):
        return None
    value = body.get("pins")
    if type(value) is not list:
        return None
    try:
        pins = tuple(map(_parse_cached, value))
    except (PinFormatError, TypeError):  # TypeError: an unhashable item
        return None
    include = body.get("include_subdomains", False)
    enforce = body.get("enforce", True)
    if (
        type(include) is not bool
        or type(enforce) is not bool
        or _rule_checks(_EXACT, key, include, pins, (), (), enforce, False, False) is not None
    ):
        return None
    return _RuleBuilder(key, pins, (), (), include, None, enforce, (), False).done()


def _parse_rule(key: Any, body: Any, source: str) -> tuple[DomainRule, PatternKind, str]:
    """One domain rule of a policy document: (the rule, its pattern kind, its base host).

    The hot path of policy and bundle loading (a 1 000-domain bundle runs it 1 000 times at
    client start): a key already in canonical form skips the pattern parser, checks are
    inlined, locations are formatted only on error, and the rule is built by `_RuleBuilder`
    after the very checks `DomainRule.__post_init__` would run.
    """
    if type(key) is str and is_canonical_name(key):
        kind: PatternKind = _EXACT
        text = base = key
    else:
        try:
            pattern = _parse_pattern(key) if type(key) is str else Pattern.parse(key)
        except HostError as exc:
            raise PolicyError(f"invalid domain: {exc}", source=source, location=_loc(key)) from None
        kind, text, base = pattern.kind, pattern.text, pattern.base
    if type(body) is not dict and not isinstance(body, Mapping):  # ABC checks cost ~0.5 µs
        raise PolicyError("a domain rule must be a table/object", source=source, location=_loc(key))
    if not _DOMAIN_FIELD_SET.issuperset(body):
        _reject_unknown(body, _DOMAIN_FIELDS, source, _loc(key))
    get = body.get
    include = get("include_subdomains", False)
    enforce = get("enforce", True)
    single = get("allow_single_pin", False)
    if type(include) is not bool or type(enforce) is not bool or type(single) is not bool:
        name, value = next(
            (name, get(name))
            for name in ("include_subdomains", "enforce", "allow_single_pin")
            if name in body and type(get(name)) is not bool
        )
        raise PolicyError(
            f"must be true or false, got {value!r}",
            source=source,
            location=f"{_loc(key)}.{name}",
        )
    value = get("pins", _MISSING)
    rule_pins = () if value is _MISSING else _rule_pins(value, "pins", key, source)
    value = get("leaf_pins", _MISSING)
    leaf = () if value is _MISSING else _rule_pins(value, "leaf_pins", key, source)
    value = get("ca_pins", _MISSING)
    ca = () if value is _MISSING else _rule_pins(value, "ca_pins", key, source)
    report_uris = get("report_uris", _MISSING)
    if report_uris is _MISSING:
        uris: tuple[str, ...] = ()
    elif (
        isinstance(report_uris, str)
        or not isinstance(report_uris, list)
        or not all(isinstance(u, str) and _is_report_uri(u) for u in report_uris)
    ):
        raise PolicyError(
            f"must be a list of http(s) URLs (RFC 3986: no spaces, quotes or control "
            f"characters), got {report_uris!r}",
            source=source,
            location=f"{_loc(key)}.report_uris",
        )
    else:
        uris = tuple(report_uris)
    expires = get("expires")
    if expires is not None:
        expires = _parse_expiry(expires, source, key)
    problem = _rule_checks(kind, base, include, rule_pins, leaf, ca, enforce, single, False)
    if problem is not None:  # the rule's own checks, located in the file
        field_name, message = problem
        where = f"{_loc(key)}.{field_name}" if field_name else _loc(key)
        raise PolicyError(message, source=source, location=where)
    rule = _RuleBuilder(text, rule_pins, leaf, ca, include, expires, enforce, uris, single).done()
    return rule, kind, base


def _rule_pins(value: Any, name: str, key: Any, source: str) -> tuple[Pin, ...]:
    if not isinstance(value, list):  # a bare string is refused too
        raise PolicyError(
            "must be a list of pin strings", source=source, location=f"{_loc(key)}.{name}"
        )
    out: list[Pin] = []
    try:
        for item in value:
            out.append(_parse_cached(item) if type(item) is str else _parse(item))
    except PinFormatError as exc:
        location = f"{_loc(key)}.{name}[{len(out)}]"
        raise PolicyError(str(exc), source=source, location=location) from None
    return tuple(out)


class _RuleBuilder:
    """Builds a `DomainRule` without the frozen dataclass's per-field ``object.__setattr__``.

    Same slots as `DomainRule` (so the instance can become one by ``__class__`` assignment);
    plain attribute stores cost a fraction of the frozen ``__init__`` (≈ 0.6 µs against
    3.5 µs). Only for checked values; tests/unit/test_policy.py checks the result equals
    ``DomainRule(...)`` field by field.
    """

    __slots__ = DomainRule.__slots__

    def __init__(
        self,
        pattern: str,
        pins: tuple[Pin, ...],
        leaf_pins: tuple[Pin, ...],
        ca_pins: tuple[Pin, ...],
        include_subdomains: bool,
        expires: dt.datetime | None,
        enforce: bool,
        report_uris: tuple[str, ...],
        allow_single_pin: bool,
    ) -> None:
        self.pattern = pattern
        self.pins = pins
        self.leaf_pins = leaf_pins
        self.ca_pins = ca_pins
        self.include_subdomains = include_subdomains
        self.expires = expires
        self.enforce = enforce
        self.report_uris = report_uris
        self.allow_single_pin = allow_single_pin
        self.kill_switch = None
        self.tofu = False

    def done(self) -> DomainRule:
        self.__class__ = DomainRule  # type: ignore[assignment]
        return self  # type: ignore[return-value]


def _rule_problem(rule: DomainRule) -> tuple[str, str] | None:
    """The first thing wrong with a rule, as (field, problem), or None.

    Runs for every `DomainRule` built in code (`from_dict` runs `_rule_checks` itself).
    """
    try:
        pattern = Pattern.parse(rule.pattern)
    except HostError as exc:
        return "", f"invalid domain: {exc}"
    if pattern.text != rule.pattern:
        return "", f"pattern must be in canonical form {pattern.text!r}"
    return _rule_checks(
        pattern.kind,
        pattern.base,
        rule.include_subdomains,
        rule.pins,
        rule.leaf_pins,
        rule.ca_pins,
        rule.enforce,
        rule.allow_single_pin,
        rule.tofu,
    )


def _rule_checks(
    kind: PatternKind,
    base: str,
    include: bool,
    pins: tuple[Pin, ...],
    leaf_pins: tuple[Pin, ...],
    ca_pins: tuple[Pin, ...],
    enforce: bool,
    allow_single_pin: bool,
    tofu: bool,
) -> tuple[str, str] | None:
    """The rule checks shared by `DomainRule.__post_init__` and `from_dict`."""
    exact = kind is _EXACT
    if (include or not exact) and is_public_suffix(base):
        return (
            "include_subdomains" if include else "",
            f"{base!r} is a public suffix: pinning all names under it would pin hosts "
            "you do not control",
        )
    if include and not exact:
        return (
            "include_subdomains",
            "include_subdomains only applies to exact keys; use a '**.' key instead",
        )
    if not (pins or leaf_pins or ca_pins):
        return "pins", "no pins: give at least one of pins, leaf_pins, ca_pins"
    if enforce and not allow_single_pin and not tofu:
        # Slot by slot, without building a list of slots: this runs once per rule loaded.
        if pins and _independent_pins(pins) < 2:
            return "pins", _NO_BACKUP.format(name="pins")
        if leaf_pins and _independent_pins(leaf_pins) < 2:
            return "leaf_pins", _NO_BACKUP.format(name="leaf_pins")
        if ca_pins and _independent_pins(ca_pins) < 2:
            return "ca_pins", _NO_BACKUP.format(name="ca_pins")
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
    if len(pins) == 2:  # the usual slot (primary + backup): no grouping needed
        a, b = pins
        if a.algorithm == b.algorithm and a.kind is b.kind:
            return 1 if a.digest == b.digest else 2
    groups: dict[tuple[str, str], set[bytes]] = {}
    for pin in pins:
        groups.setdefault((pin.algorithm, pin.kind.value), set()).add(pin.digest)
    return max(len(g) for g in groups.values())


_URI = re.compile(r"https?://[A-Za-z0-9._~:@!$&()*+,;=%/?#\[\]-]+\Z")  # no quotes at all


def _is_report_uri(uri: str) -> bool:
    """An absolute http(s) URI of RFC 3986 characters with a host: safe to carry into any export
    format (headers, plists, code) and to POST to."""
    if not _URI.match(uri):
        return False
    try:
        return bool(urlsplit(uri).hostname)
    except ValueError:
        return False


def _parse_expiry(value: Any, source: str, key: Any) -> dt.datetime:
    """A date means 00:00:00Z of that day (Android NSC, TrustKit); naive times are UTC."""
    when: dt.datetime | dt.date
    if isinstance(value, str):
        try:
            when = (
                dt.date.fromisoformat(value)
                if len(value) == 10
                else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            )
        except ValueError:
            raise PolicyError(
                f"invalid date {value!r}: expected YYYY-MM-DD or an ISO 8601 date-time",
                source=source,
                location=f"{_loc(key)}.expires",
            ) from None
    elif isinstance(value, dt.date):
        when = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise PolicyError(
                f"invalid date {value!r}: timestamp out of range",
                source=source,
                location=f"{_loc(key)}.expires",
            ) from None
    else:
        raise PolicyError(
            f"invalid date {value!r}: expected YYYY-MM-DD or an ISO 8601 date-time",
            source=source,
            location=f"{_loc(key)}.expires",
        )
    if not isinstance(when, dt.datetime):
        return dt.datetime(when.year, when.month, when.day, tzinfo=dt.UTC)
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    try:
        return when.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise PolicyError(
            f"invalid date {value!r}: out of range in UTC",
            source=source,
            location=f"{_loc(key)}.expires",
        ) from None


def _format_expiry(when: dt.datetime) -> str:
    if when.time() == dt.time(0, 0):
        return when.date().isoformat()
    return when.isoformat().replace("+00:00", "Z")
