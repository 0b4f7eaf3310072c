"""Policy documents: schema v1, read (`policy_from_dict`, `read_policy`) and written
(`policy_to_dict`). `Policy.from_dict`, `Policy.from_file` and `Policy.to_dict` call these.

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

Reading a document checks what only a document can get wrong (field names and types, pin
notation, dates, two keys that name one rule) and then builds each rule as `DomainRule`, whose
own checks (`DomainRule.__post_init__`) are the one place a rule is accepted; their refusals are
re-raised naming the file and the key as written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certpin._errors import PinFormatError, PolicyError
from certpin.core.hosts import HostError, HostPattern
from certpin.core.pins import Pin
from certpin.core.times import expiry_text, parse_expiry
from certpin.core.toml import (
    DocumentError,
    check_structure,
    key_text,
    parse_json,
    parse_toml,
    read_document,
    shown,
)

if TYPE_CHECKING:  # policy.py imports this module: the classes are imported where they are used
    from certpin.core.policy import DomainRule, Policy

__all__ = [
    "MAX_POLICY_SIZE",
    "SCHEMA_VERSION",
    "policy_from_dict",
    "policy_to_dict",
    "read_policy",
    "rule_to_dict",
]

SCHEMA_VERSION = 1
#: the largest policy file `Policy.from_file` reads: about 80 000 two-pin domains in TOML
#: (docs/policy.md, "Limits").
MAX_POLICY_SIZE = 16 * 1024 * 1024
_MAX_VERSION = 2**63 - 1

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
_DOMAIN_FIELD_SET = frozenset(_DOMAIN_FIELDS)
_FLAGS = ("include_subdomains", "enforce", "allow_single_pin")
_MISSING: Any = object()


# -- reading -------------------------------------------------------------------------------------


def read_policy(path: str | Path) -> Policy:
    """`Policy.from_file`: read a TOML or JSON policy file within the limits."""
    p = Path(path)
    source = str(path)
    try:
        text = read_document(p, MAX_POLICY_SIZE)
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror or exc}", source=source) from None
    except DocumentError as exc:
        raise PolicyError(exc.described("policy"), source=source) from None
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
    return policy_from_dict(data, source=source)


def policy_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Policy:
    """`Policy.from_dict`: validate a parsed document into a `Policy`."""
    from certpin.core.policy import Policy

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
    try:
        rules = _rules(raw_domains, source)
    except Exception:  # noqa: BLE001 - deliberately anything: which error to report is decided here
        # What no TOML or JSON parser makes (a bytes value, a 70-bit integer, nesting deeper
        # than 32 levels, a non-string key) is named first, with its own message, wherever it
        # is in the document: the rules' messages repr the values they refuse, which may then
        # fail or run away. Every such value makes some rule fail, so a document that loads
        # never needs this walk (a 1 000-rule bundle is spared it).
        try:
            check_structure(raw_domains, depth=2, path="domains")
        except DocumentError as exc:
            raise PolicyError(exc.problem, source=source, location=exc.path) from None
        raise
    return Policy(domains=rules, version=version, unpinned_hosts=unpinned, source=source)


def _rules(raw_domains: Mapping[Any, Any], source: str) -> dict[str, DomainRule]:
    """The ``domains`` table: canonical pattern -> rule, in document order."""
    from certpin.core.policy import DomainRule  # policy imports this module: import at use

    rules: dict[str, DomainRule] = {}
    for key, body in raw_domains.items():
        rule = _rule(key, body, source, DomainRule)
        if rule.pattern in rules:
            first = next(k for k in raw_domains if HostPattern.parse(k).text == rule.pattern)
            raise PolicyError(
                f"names the same rule as {first!r} (both are {rule.pattern!r} after normalisation)",
                source=source,
                location=_loc(key),
            )
        rules[rule.pattern] = rule
    return rules


def _rule(key: Any, body: Any, source: str, rule_class: type[DomainRule]) -> DomainRule:
    """One ``[domains."key"]`` table as a `DomainRule`: the document's fields checked and
    converted here, the rule's own checks by `DomainRule`. (This runs once per rule of every
    policy and bundle loaded: each field is read with one ``get``, and locations are only
    formatted for an error.)"""
    try:
        pattern = HostPattern.parse(key)
    except HostError as exc:
        raise PolicyError(f"invalid domain: {exc}", source=source, location=_loc(key)) from None
    if not isinstance(body, Mapping):
        raise PolicyError("a domain rule must be a table/object", source=source, location=_loc(key))
    if not _DOMAIN_FIELD_SET.issuperset(body):
        _reject_unknown(body, _DOMAIN_FIELDS, source, _loc(key))
    get = body.get
    include = get("include_subdomains", False)
    enforce = get("enforce", True)
    single = get("allow_single_pin", False)
    if type(include) is not bool or type(enforce) is not bool or type(single) is not bool:
        name = next(n for n in _FLAGS if n in body and type(body[n]) is not bool)
        raise PolicyError(
            f"must be true or false, got {body[name]!r}",
            source=source,
            location=f"{_loc(key)}.{name}",
        )
    pins = _pins(get("pins", _MISSING), "pins", key, source)
    leaf_pins = _pins(get("leaf_pins", _MISSING), "leaf_pins", key, source)
    ca_pins = _pins(get("ca_pins", _MISSING), "ca_pins", key, source)
    uris = get("report_uris", _MISSING)
    if uris is _MISSING:
        uris = ()
    elif not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise PolicyError(
            f"must be a list of http(s) URLs (RFC 3986: no spaces, quotes or control "
            f"characters), got {uris!r}",
            source=source,
            location=f"{_loc(key)}.report_uris",
        )
    expires = get("expires")
    if expires is not None:
        try:
            expires = parse_expiry(expires)
        except ValueError as exc:
            raise PolicyError(str(exc), source=source, location=f"{_loc(key)}.expires") from None
    try:
        return rule_class(
            pattern.text,
            pins,
            leaf_pins,
            ca_pins,
            include,
            expires,
            enforce,
            tuple(uris),
            single,
        )
    except PolicyError as exc:  # the rule's own checks: located in the document
        where = f"{_loc(key)}.{exc.field}" if exc.field else _loc(key)
        raise PolicyError(exc.problem, source=source, location=where) from None


def _pins(value: Any, name: str, key: Any, source: str) -> tuple[Pin, ...]:
    if value is _MISSING:
        return ()
    if not isinstance(value, list):  # a bare string is refused too
        raise PolicyError(
            "must be a list of pin strings", source=source, location=f"{_loc(key)}.{name}"
        )
    out: list[Pin] = []
    try:
        for item in value:
            out.append(Pin.parse(item))
    except PinFormatError as exc:
        location = f"{_loc(key)}.{name}[{len(out)}]"
        raise PolicyError(str(exc), source=source, location=location) from None
    return tuple(out)


def _loc(key: Any) -> str:
    """The error location of a domain key, as written in the document."""
    return f"domains.{json.dumps(key, ensure_ascii=False)}"


def _reject_unknown(data: Mapping[str, Any], known: tuple[str, ...], source: str, loc: str) -> None:
    for key in data:
        if key not in known:
            from difflib import get_close_matches  # only for a mistake: not at every start

            close = get_close_matches(str(key), known, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
            )
            # Quoted unless bare: a key of a file may hold a new line or a terminal escape.
            where = f"{loc}.{key_text(key)}" if loc else key_text(key)
            raise PolicyError(f"unknown field{hint}", source=source, location=where)


# -- writing -------------------------------------------------------------------------------------


def policy_to_dict(policy: Policy, *, defaults: bool = True) -> dict[str, Any]:
    """`Policy.to_dict`: the document `policy_from_dict` reads back into an equal policy."""
    out: dict[str, Any] = {"schema": SCHEMA_VERSION}
    if policy.version is not None:
        out["version"] = policy.version
    out["unpinned_hosts"] = policy.unpinned_hosts
    out["domains"] = {k: rule_to_dict(r, defaults=defaults) for k, r in policy.domains.items()}
    return out


def rule_to_dict(rule: DomainRule, *, defaults: bool = True) -> dict[str, Any]:
    """`DomainRule.to_dict`: one ``[domains."key"]`` table."""
    out: dict[str, Any] = {}
    for name in ("pins", "leaf_pins", "ca_pins"):
        pins = getattr(rule, name)
        if pins:
            out[name] = [str(p) for p in pins]
    if defaults or rule.include_subdomains:
        out["include_subdomains"] = rule.include_subdomains
    if rule.expires is not None:
        out["expires"] = expiry_text(rule.expires)
    if defaults or not rule.enforce:
        out["enforce"] = rule.enforce
    if rule.report_uris:
        out["report_uris"] = list(rule.report_uris)
    if rule.allow_single_pin:
        out["allow_single_pin"] = True
    return out
