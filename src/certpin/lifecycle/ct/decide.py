"""Which logged certificates matter, and what the one verdict says about them.

`Coverage` answers "which policy rules would this certificate let someone impersonate?" with the
core's own lookup (`Policy.lookup`, the rule the TLS hook would apply to that host): an exact
name asks for itself; a wildcard name ``*.example.com`` asks for every host it is valid for:
each policy key one label under example.com, and every other host there (``below=1``).

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
from certpin.core.verdict import Outcome, verdict
from certpin.lifecycle.ct.certs import dns_names, issuance_tbs, tbs_of_certificate
from certpin.lifecycle.ct.entries import PRECERT_ENTRY, Entry
from certpin.lifecycle.ct.errors import EntryError

__all__ = ["Candidate", "Coverage", "decide", "linked_chain", "names_of"]

#: (host, labels under it: 0 the host itself, 1 every host one label under it; its rule)
_Hit = tuple[str, int, DomainRule]


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
        self._cache: dict[str, tuple[_Hit, ...]] = {}

    def rules(self, names: Sequence[str]) -> dict[str, _Hit]:
        """pattern -> (a host the certificate is valid for, how many labels under it — 1 for
        "every other host under it" —, the rule that host falls under)."""
        found: dict[str, _Hit] = {}
        for name in names:
            hits = self._cache.get(name)
            if hits is None:
                hits = self._name_rules(name)
                if len(self._cache) > 100_000:  # bounded: a log repeats the same names a lot
                    self._cache.clear()
                self._cache[name] = hits
            for hit in hits:
                found.setdefault(hit[2].pattern, hit)
        return found

    def _name_rules(self, name: str) -> tuple[_Hit, ...]:
        wildcard = name.startswith("*.")
        try:
            host = normalize_host(name[2:] if wildcard else name)
        except HostError:
            return ()  # not a name any client could connect to (IDN junk, spaces, "*" inside)
        if not wildcard:
            rule = self.policy.lookup(host)
            return () if rule is None else ((host, 0, rule),)
        # RFC 6125 §6.4.3: "*.B" is valid for exactly one label under B: the hosts there that
        # have a key of their own, and every other one (`below=1`, no label invented).
        hits: list[_Hit] = []
        rule = self.policy.lookup(host, below=1)
        if rule is not None:
            hits.append((host, 1, rule))
        for child in sorted(self._children.get(host, ())):
            rule = self.policy.lookup(child)
            if rule is not None:
                hits.append((child, 0, rule))
        return tuple(hits)


@dataclass
class Candidate:
    """A verified entry whose names a rule covers, waiting for its decision."""

    entry: Entry
    names: list[str]
    rules: dict[str, _Hit]


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
    for pattern, (host, below, _rule) in sorted(candidate.rules.items()):
        outcome = verdict(host, chain, policy, now, below=below).outcome
        if outcome is Outcome.PINNED:
            hosts.append(pattern)
        elif outcome is Outcome.MISMATCH:
            hosts.append(pattern)
            unexpected = True
        # CA_ONLY (expired rule, kill switch): the rule pins nothing today, as for a connection.
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
