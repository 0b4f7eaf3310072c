"""Verified chains for the lifecycle tools (lint, rotate, inventory), and what each pin names.

Two sources, one result per policy key (`DomainChain`):

- ``--chain DOMAIN=FILE``: a PEM file with the leaf first (as a server serves it), *verified*
  against ``--cafile`` (default: the system CA file) with ``cryptography.x509.verification``: the
  same path building a client does, so the root comes from the trust store even when the file
  does not hold it. RFC 7469 §2.6: pins are checked against the validated chain; a pinned root the
  server does not send still counts.
- ``--connect``: the live verified chain, fetched concurrently with `fetch_chain_async` (the same
  verification a pinning context does). ``--address DOMAIN=HOST:PORT`` says where to connect for a
  key (default: the key itself, port 443); SNI and verification always use the domain.

A wildcard key has no host of its own. Its verdict is run for a *name*: with ``--chain``, the first
name of the leaf's SubjectAltName for which the policy applies the key (``*.example.com`` on a
certificate stands for every host one label under example.com, and is judged as such:
`verdict_for_name`); with ``--connect`` a ``**.example.com`` key is fetched from ``example.com``
(zero labels), and a ``*.example.com`` key is skipped with a note unless ``--address`` names a
server for it. Only where a concrete host is needed to talk to a server or verify a certificate
(SNI) is one made up (`certpin.lifecycle.chain_files.example_host`); it never decides coverage.

Which certificate a pin names is `Pin.matches` (a certificate) or `Pin.matches_spki` (a bare key or
CSR of ``--key``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from certpin._errors import ConfigurationError
from certpin.core.hosts import HostError, HostPattern, PatternKind, normalize_host
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.core.verdict import Verdict, verdict
from certpin.lifecycle.chain_files import (
    default_cafile,
    example_host,
    leaf_names,
    parse_chain_specs,
    read_certs,
    verify,
    verify_chain_file,
)
from certpin.tls.fetch import DEFAULT_TIMEOUT, ConnectError, fetch_chain_async, parse_target

__all__ = [
    "ChainCert",
    "DomainChain",
    "SpareKey",
    "PinInfo",
    "acquire_chains",
    "classify_pins",
    "chain_for_file",
    "default_cafile",
    "describe_chain",
    "identify_spare",
    "key_family",
    "leaf_names",
    "load_spares",
    "key_name",
    "parse_chain_specs",
    "pin_positions",
    "split_name",
    "verdict_for_name",
    "verify_chain_file",
]


@dataclass(frozen=True)
class ChainCert:
    """One certificate of a verified chain, described for the lifecycle tools."""

    position: int
    der: bytes = field(repr=False)
    subject: str
    issuer: str
    not_after: dt.datetime
    key_type: str
    is_ca: bool
    pin: Pin

    @property
    def role(self) -> str:
        """``leaf``, ``intermediate`` or ``root`` (self-issued CA at the end of the chain)."""
        if self.position == 0:
            return "leaf"
        return "root" if self.subject == self.issuer else "intermediate"


@dataclass(frozen=True)
class DomainChain:
    """The verified chain for one policy key, or why there is none.

    Attributes:
        key: the policy key (rule pattern).
        host: the name the verdict is run for (`verdict_for_name`): a host, or ``*.base`` for
            the hosts one label under base (a wildcard key or certificate name).
        chain: verified DER certificates, leaf first, root last; empty when unavailable.
        origin: ``"file PATH"`` or ``"connect HOST:PORT"``.
        error: why no chain is available (connection failure…), or None.
        note: a remark for the user (e.g. a wildcard key that was skipped), or None.
    """

    key: str
    host: str
    chain: tuple[bytes, ...]
    origin: str
    error: str | None = None
    note: str | None = None

    @property
    def available(self) -> bool:
        return bool(self.chain)

    def certs(self) -> list[ChainCert]:
        return describe_chain(self.chain)


@dataclass(frozen=True)
class SpareKey:
    """A spare key, CSR or certificate given with ``--key``: what a backup pin may name."""

    source: str
    kind: str
    pin: Pin
    key_type: str
    subject: str | None
    not_after: dt.datetime | None
    der: bytes = field(repr=False)
    spki: bytes = field(default=b"", repr=False)


# -- what a pin names -------------------------------------------------------------------------


def pin_positions(pin: Pin, chain: Sequence[bytes]) -> list[int]:
    """The chain positions whose certificate `pin` names (`Pin.matches`); a certificate that
    does not parse is named by no pin."""
    out = []
    for i, der in enumerate(chain):
        try:
            if pin.matches(der):
                out.append(i)
        except ValueError:
            continue
    return out


def identify_spare(pin: Pin, spares: Iterable[SpareKey]) -> SpareKey | None:
    """The spare key/CSR/certificate `pin` names, or None (display and advice only).

    A certificate is matched as a chain certificate is (`Pin.matches`); a bare key or a CSR has
    no certificate, so its SubjectPublicKeyInfo is (`Pin.matches_spki`).
    """
    for spare in spares:
        if spare.kind == "certificate":
            if pin_positions(pin, [spare.der]):
                return spare
        elif spare.spki and pin.matches_spki(spare.spki):
            return spare
    return None


def load_spares(paths: Iterable[str], password: bytes | None = None) -> list[SpareKey]:
    """Read ``--key`` files (keys, public keys, CSRs, certificates)."""
    from certpin.core.sources import load_file

    out = []
    for path in paths:
        for src in load_file(path, password):
            out.append(
                SpareKey(
                    source=f"{path}#{src.position}" if src.position else path,
                    kind=src.kind,
                    pin=src.pin,
                    key_type=src.key_type,
                    subject=src.subject,
                    not_after=src.not_after,
                    der=src.der,
                    spki=src.spki,
                )
            )
    return out


def describe_chain(chain: Sequence[bytes]) -> list[ChainCert]:
    from certpin.core.sources import load_sources

    out = []
    for i, der in enumerate(chain):
        (src,) = load_sources(der, source=f"chain position {i}")
        assert src.not_after is not None and src.subject is not None and src.issuer is not None
        out.append(
            ChainCert(
                position=i,
                der=der,
                subject=src.subject,
                issuer=src.issuer,
                not_after=src.not_after,
                key_type=src.key_type,
                is_ca=bool(src.is_ca),
                pin=src.pin,
            )
        )
    return out


# -- names: a host, or *.base for every host one label under base -----------------------------


def split_name(name: str) -> tuple[str, int]:
    """A host or certificate name as (host, labels below it): ``*.example.com`` ->
    (``example.com``, 1), any other name -> (the name, 0)."""
    return (name[2:], 1) if name.startswith("*.") else (name, 0)


def key_name(key: str) -> str:
    """The name a policy key's verdict is run for when no chain says better: an exact key
    itself, ``*.base`` for ``*.base`` (every host one label under base), the base for
    ``**.base`` (zero labels: the base is one of its hosts)."""
    pattern = HostPattern.parse(key)
    return pattern.base if pattern.kind is PatternKind.ANY_LABELS else pattern.text


def verdict_for_name(
    name: str, chain: Sequence[bytes], policy: Policy, now: dt.datetime
) -> Verdict:
    """`certpin.verdict` for a host, or for ``*.base``: every host one label under base that
    has no key of its own (what a certificate's wildcard name stands for)."""
    host, below = split_name(name)
    return verdict(host, chain, policy, now, below=below)


def _applies(policy: Policy, key: str, name: str) -> bool:
    """Whether `policy` applies the rule of `key` to `name` (a host or ``*.base``)."""
    host, below = split_name(name)
    try:
        found = policy.lookup(host, below=below)
    except (HostError, ValueError):
        return False
    return found is not None and found.pattern == key


# -- --chain DOMAIN=FILE (verification itself: certpin.lifecycle.chain_files) ---------------


def chain_for_file(
    key: str,
    path: str,
    cafile: str | None,
    policy: Policy | None = None,
    now: dt.datetime | None = None,
) -> DomainChain:
    """Verify the PEM chain in `path` (leaf first) for policy key `key` and return it.

    The chain is verified at `now` (default: the current time) for the key's host; for a wildcard
    key, for the first SubjectAltName of the leaf for which `policy` applies the key.

    Raises:
        ConfigurationError: unreadable file, no certificate, or the chain does not verify; the
            message names the file.
    """
    from cryptography import x509

    certs = read_certs(path, "the chain file")
    leaf = x509.load_der_x509_certificate(certs[0])
    name = _host_for_leaf(key, leaf, policy, path)
    chain = verify(certs, example_host(name), path, cafile, now)
    return DomainChain(key=key, host=name, chain=chain, origin=f"file {path}")


def _host_for_leaf(key: str, leaf: object, policy: Policy | None, path: str) -> str:
    """The name a chain file's verdict is run for: an exact key itself; for a wildcard key the
    first name of the leaf for which `policy` applies the key (without a policy: which the
    key's pattern covers)."""
    pattern = HostPattern.parse(key)
    if pattern.kind is PatternKind.EXACT:
        return pattern.text
    names = leaf_names(leaf, path)
    for name in names:
        host, below = split_name(name)
        try:
            canonical = "*." * below + normalize_host(host)
            if policy is not None:
                applies = _applies(policy, key, canonical)
            else:
                applies = pattern.matches(host, below=below)
        except HostError:
            continue
        if applies:
            return canonical
    raise ConfigurationError(
        f"{path}: the leaf's names ({', '.join(names) or 'none'}) include none that the key "
        f"{key!r} covers"
    )


# -- --connect --------------------------------------------------------------------------------


def _connect_target(
    key: str, policy: Policy, addresses: Mapping[str, str]
) -> tuple[str, str, str, int] | str:
    """(verdict name, SNI host, connect host, port) for a key, or a note saying why it is
    skipped."""
    pattern = HostPattern.parse(key)
    address = addresses.get(key)
    name = key_name(key)
    if pattern.kind is PatternKind.ONE_LABEL and address is None:
        return (
            f"{key}: a '*.' key names no host to connect to; give --address {key}=HOST:PORT "
            f"or --chain {key}=FILE"
        )
    if pattern.kind is PatternKind.ANY_LABELS and not _applies(policy, key, name):
        return (
            f"{key}: its base name {name} has a rule of its own; give --chain {key}=FILE "
            "to check this key"
        )
    sni = example_host(name)  # a '*.' key's server is asked for a host under it
    if address is None:
        return name, sni, sni, 443
    try:
        host, port = parse_target(address, 443)
    except ValueError as exc:
        raise ConfigurationError(f"--address {key}={address}: {exc}") from None
    return name, sni, host, port


async def _fetch_all(
    jobs: list[tuple[str, str, str, str, int]], cafile: str | None, timeout: float
) -> list[DomainChain]:
    async def one(key: str, name: str, sni: str, host: str, port: int) -> DomainChain:
        origin = f"connect {host}:{port}"
        try:
            fetched = await fetch_chain_async(
                host, port, cafile=cafile, servername=sni, timeout=timeout
            )
        except ConnectError as exc:
            return DomainChain(key=key, host=name, chain=(), origin=origin, error=str(exc))
        return DomainChain(key=key, host=name, chain=fetched.verified, origin=origin)

    return list(await asyncio.gather(*(one(*job) for job in jobs)))


def acquire_chains(
    policy: Policy,
    *,
    chain_files: Mapping[str, str] | None = None,
    connect: bool = False,
    addresses: Mapping[str, str] | None = None,
    cafile: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, DomainChain]:
    """The verified chain of every key of `policy` that has one (files first, then live).

    Keys given with ``--chain`` are read from their file; with `connect`, every other key is
    fetched (concurrently). A key without a chain gets a `DomainChain` whose ``note`` or
    ``error`` says why.

    Raises:
        ConfigurationError: a ``--chain``/``--address`` key that is not a key of the policy, or a
            chain file that cannot be read or does not verify.
    """
    chain_files = dict(chain_files or {})
    addresses = dict(addresses or {})
    for option, mapping in (("--chain", chain_files), ("--address", addresses)):
        for key in mapping:
            if key not in policy.domains:
                known = ", ".join(policy.domains) or "none"
                raise ConfigurationError(
                    f"{option} {key}=…: {key!r} is not a key of {policy.source} (keys: {known})"
                )
    out: dict[str, DomainChain] = {}
    for key, path in chain_files.items():
        if not Path(path).is_file():
            raise ConfigurationError(f"--chain {key}={path}: {path}: no such file")
        out[key] = chain_for_file(key, path, cafile, policy)
    jobs: list[tuple[str, str, str, str, int]] = []
    for key in policy.domains:
        if key in out:
            continue
        if not connect and key not in addresses:
            out[key] = DomainChain(key=key, host=key_name(key), chain=(), origin="none")
            continue
        target = _connect_target(key, policy, addresses)
        if isinstance(target, str):
            out[key] = DomainChain(
                key=key, host=key_name(key), chain=(), origin="none", note=target
            )
        else:
            jobs.append((key, *target))
    if jobs:
        for result in asyncio.run(_fetch_all(jobs, cafile, timeout)):
            out[result.key] = result
    return {key: out[key] for key in policy.domains}


# -- what every pin of a rule is --------------------------------------------------------------


@dataclass(frozen=True)
class PinInfo:
    """One distinct pin of a rule, with what it names.

    Attributes:
        pin: the pin.
        slots: the rule fields listing it (``pins``, ``leaf_pins``, ``ca_pins``).
        positions: verified-chain positions it names (`Pin.matches`); empty for a backup pin
            or when no chain is known.
        certs: the chain certificates at those positions.
        spare: the ``--key`` file it names, or None.
    """

    pin: Pin
    slots: tuple[str, ...]
    positions: tuple[int, ...]
    certs: tuple[ChainCert, ...]
    spare: SpareKey | None

    @property
    def live(self) -> bool:
        """True when the pin names a certificate of the current verified chain."""
        return bool(self.positions)

    @property
    def key_type(self) -> str | None:
        if self.certs:
            return self.certs[0].key_type
        return None if self.spare is None else self.spare.key_type


def classify_pins(
    rule: DomainRule,
    certs: Sequence[ChainCert],
    spares: Sequence[SpareKey],
    now: dt.datetime | None = None,
) -> list[PinInfo]:
    """Every distinct pin of `rule`, in order, with the chain certificates and spare key named.

    `now` is ignored (what a pin names does not depend on the time); callers written when it
    was needed may still pass it.
    """
    chain = [c.der for c in certs]
    out = []
    for pin in rule.all_pins:
        slots = tuple(
            name for name in ("pins", "leaf_pins", "ca_pins") if pin in getattr(rule, name)
        )
        positions = tuple(pin_positions(pin, chain))
        out.append(
            PinInfo(
                pin=pin,
                slots=slots,
                positions=positions,
                certs=tuple(certs[i] for i in positions),
                spare=identify_spare(pin, spares),
            )
        )
    return out


def key_family(key_type: str) -> str:
    """``"RSA 2048"`` -> ``"RSA"``, ``"EC P-256"`` -> ``"EC"``, ``"Ed25519"`` -> ``"Ed25519"``."""
    return key_type.split(" ", 1)[0]
