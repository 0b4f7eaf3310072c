"""Which logged certificates matter, and what the one verdict says about them.

`Coverage` answers "which policy rules would this certificate let someone impersonate?" with the
core's own lookup (`Policy.lookup`, the rule the TLS hook would apply to that host): an exact
name asks for itself; a wildcard name ``*.example.com`` asks for every host it is valid for that
the policy could hold (each policy key one label under example.com, and a label no key uses).

`decide` then runs `certpin.core.verdict.verdict` over the logged certificate and the part of the
stored issuer chain whose signatures link up. The stored chain is not covered by the log's
Merkle tree, so an issuer that did not sign the certificate before it is cut off: a rogue
certificate cannot borrow a pinned CA by listing it (the CT form of OkHttp CVE-2016-2402).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from certpin.core.hosts import HostError, HostPattern, normalize_host
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.core.times import iso
from certpin.core.verdict import VerdictStatus, verdict
from certpin.lifecycle.ct.certs import dns_names, issuance_tbs, tbs_of_certificate
from certpin.lifecycle.ct.entries import PRECERT_ENTRY, Entry
from certpin.lifecycle.ct.errors import EntryError

__all__ = ["Candidate", "Coverage", "decide", "linked_chain", "names_of"]

#: verdicts that mean the rule is in force and the key is one it pins.
_PINNED = frozenset({VerdictStatus.OK})
#: verdicts that mean the rule is in force and no pin matched.
_UNEXPECTED = frozenset({VerdictStatus.FAILED, VerdictStatus.TOFU_MISMATCH})


class Coverage:
    """The policy rules a certificate's DNS names fall under (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        # parent domain -> the policy bases directly under it (for wildcard certificate names)
        children: dict[str, set[str]] = {}
        for key in policy.domains:
            base = HostPattern.parse(key).base
            parent = base.partition(".")[2]
            if parent:
                children.setdefault(parent, set()).add(base)
        self._children = children
        self._cache: dict[str, tuple[tuple[str, DomainRule], ...]] = {}

    def rules(self, names: Sequence[str]) -> dict[str, tuple[str, DomainRule]]:
        """pattern -> (a host the certificate is valid for, the rule that host falls under)."""
        found: dict[str, tuple[str, DomainRule]] = {}
        for name in names:
            hits = self._cache.get(name)
            if hits is None:
                hits = self._name_rules(name)
                if len(self._cache) > 100_000:  # bounded: a log repeats the same names a lot
                    self._cache.clear()
                self._cache[name] = hits
            for host, rule in hits:
                found.setdefault(rule.pattern, (host, rule))
        return found

    def _name_rules(self, name: str) -> tuple[tuple[str, DomainRule], ...]:
        wildcard = name.startswith("*.")
        try:
            host = normalize_host(name[2:] if wildcard else name)
        except HostError:
            return ()  # not a name any client could connect to (IDN junk, spaces, "*" inside)
        if not wildcard:
            rule = self.policy.lookup(host)
            return () if rule is None else ((host, rule),)
        # RFC 6125 §6.4.3: "*.B" is valid for exactly one label under B.
        children = self._children.get(host, set())
        label = "_certpin-any-label_"
        while f"{label}.{host}" in children:
            label += "_"
        hits = []
        for probe in (f"{label}.{host}", *sorted(children)):
            rule = self.policy.lookup(probe)
            if rule is not None:
                hits.append((probe, rule))
        return tuple(hits)


@dataclass
class Candidate:
    """A verified entry whose names a rule covers, waiting for its decision."""

    entry: Entry
    names: list[str]
    rules: dict[str, tuple[str, DomainRule]]


def names_of(entry: Entry) -> list[str]:
    """The DNS names of an entry's certificate (raises EntryError when it does not parse)."""
    tbs = entry.tbs_or_cert if entry.entry_type == PRECERT_ENTRY else None
    return dns_names(tbs if tbs is not None else tbs_of_certificate(entry.tbs_or_cert))


def linked_chain(leaf: bytes, issuers: Sequence[bytes]) -> list[bytes]:
    """`leaf` and the issuers that each signed the certificate before them, up to the first
    that did not (or does not parse)."""
    chain = [leaf]
    try:
        child = x509.load_der_x509_certificate(leaf)
        for der in issuers:
            parent = x509.load_der_x509_certificate(der)
            child.verify_directly_issued_by(parent)
            chain.append(der)
            child = parent
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        pass  # unparsable, a key type the signature does not fit, a bad signature
    return chain


def decide(
    candidate: Candidate,
    leaf: bytes | None,
    issuers: Sequence[bytes],
    policy: Policy,
    now: dt.datetime,
    log_url: str,
) -> dict[str, Any] | None:
    """The output record of a covered entry, or None when no covering rule is in force.

    `leaf` is the logged certificate (the precertificate for a precert entry; None when the log's
    stored data for it does not parse) and `issuers` the chain the log stored. The record is
    ``pinned`` when every rule in force that covers a name matched, ``unexpected`` when any did
    not.
    """
    entry = candidate.entry
    chain = [] if leaf is None else linked_chain(leaf, issuers)
    hosts, unexpected = [], False
    for pattern, (host, _rule) in sorted(candidate.rules.items()):
        result = verdict(host, chain, policy, now)
        if result.status in _PINNED:
            hosts.append(pattern)
        elif result.status in _UNEXPECTED:
            hosts.append(pattern)
            unexpected = True
        # EXPIRED / KILLED: the rule pins nothing today, as for a TLS connection.
    if not hosts:
        return None
    tbs = entry.tbs_or_cert if entry.entry_type == PRECERT_ENTRY else None
    record: dict[str, Any] = {
        "kind": "unexpected" if unexpected else "pinned",
        "hosts": hosts,
        "names": candidate.names,
        "spki_pin": None,
        "tbs_sha256": None,
        "log": log_url,
        "index": entry.index,
        "entry_type": entry.type_name,
        "not_before": None,
        "not_after": None,
        "issuer": None,
    }
    try:
        tbs = tbs if tbs is not None else tbs_of_certificate(entry.tbs_or_cert)
        record["tbs_sha256"] = hashlib.sha256(issuance_tbs(tbs)).hexdigest()
        if leaf is None:
            raise ValueError("no certificate")
        record["spki_pin"] = str(Pin.for_certificate(leaf))
        cert = x509.load_der_x509_certificate(leaf)
        record["not_before"] = iso(cert.not_valid_before_utc)
        record["not_after"] = iso(cert.not_valid_after_utc)
        record["issuer"] = cert.issuer.rfc4514_string()
    except (ValueError, EntryError):
        # A certificate for a pinned name that cannot be fully read is still reported (with
        # what could be read): fail closed.
        record["kind"] = "unexpected"
    return record
