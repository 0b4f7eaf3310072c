"""Pinning for grpcio: CA pins, enforced by narrowing its trust anchors.

grpcio verifies certificates with its own TLS stack (BoringSSL, in C) and offers Python no
callback after verification (grpc/grpc#32635, open), so certpin cannot run the verdict on a
grpcio connection. What it can do is choose the ``root_certificates`` grpcio trusts: keep only
the CA certificates the host's rule pins. A chain then verifies only if it runs through one of
them, and that certificate is in the verified chain, which is what the rule asks for. This is
*CA pinning only* (docs/process-wide.md):

* ``ca_pins`` and ``pins``: the CA certificates of `ca_certs` that every set slot names are the
  anchors. ``pins`` entries naming other certificates (a leaf key, a CA you did not give) are
  not anchors: a connection certpin's context would accept through them is refused here —
  stricter, never weaker. No CA certificate of `ca_certs` named: `UnenforceableRuleError`;
* ``leaf_pins``: refused; trust anchors cannot check the leaf's key;
* report-only rules: refused (grpcio cannot report and continue);
* an expired rule or an active kill switch: every certificate of `ca_certs` (CA validation
  only, logged at WARNING), as the verdict does; a host no rule covers: the same, or
  `PinValidationError` under ``unpinned_hosts = "deny"``.

An intermediate CA works as an anchor with the grpcio tested here (1.85: a chain ending at a
trusted intermediate verifies); older releases that insist on a self-signed root
(grpc/grpc#16305) refuse such connections: closed, not open.

grpclib takes an `ssl.SSLContext`: give it `certpin.create_default_context` and every pin kind
works, exactly as for any Python client.

grpc is imported only by `channel_credentials` and `secure_channel`, so this module imports
without it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import re
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from certpin._errors import CertificateLoadError, UnenforceableRuleError
from certpin.core.hosts import HostError, normalize_host
from certpin.core.policy import DomainRule, Policy, PolicyProvider, as_provider
from certpin.core.sources import PinSource, load_file, load_sources
from certpin.tls._native import rule_in_force, unenforceable, utcnow

__all__ = [
    "UnenforceableRuleError",
    "channel_credentials",
    "root_certificates",
    "secure_channel",
]

CLIENT = "grpcio"

CACerts = bytes | str | os.PathLike[str]


def root_certificates(
    policy: Policy | PolicyProvider | Callable[[], Policy],
    host: str,
    *,
    ca_certs: CACerts,
    now: dt.datetime | None = None,
) -> bytes:
    """The PEM trust anchors grpcio must use for `host`: the pinned CA certificates of
    `ca_certs`, or all of them when the host is not pinned now (module docstring).

    Args:
        policy: a `Policy`, or anything yielding the current one (asked once, now).
        host: the name grpcio verifies the certificate for (the target's host, or its
            ``grpc.ssl_target_name_override``).
        ca_certs: the CA certificates the client trusts: PEM or DER bytes, or a file path.
        now: the time for rule expiry and kill switches (default: the current UTC time).

    Raises:
        UnenforceableRuleError: the rule has ``leaf_pins``, is report-only, or names none of
            the CA certificates of `ca_certs`.
        PinValidationError: no rule covers the host and the policy denies unpinned hosts.
        CertificateLoadError: `ca_certs` cannot be read or holds something other than
            certificates.
        HostError: `host` is not a host name or IP address.
    """
    certificates = _read_ca_certs(ca_certs)
    rule = rule_in_force(as_provider(policy)(), host, CLIENT, now or utcnow())
    if rule is not None:
        certificates = _pinned_anchors(normalize_host(host), rule, certificates)
    return "".join(ssl.DER_cert_to_PEM_cert(c.der) for c in certificates).encode("ascii")


def channel_credentials(
    policy: Policy | PolicyProvider | Callable[[], Policy],
    host: str,
    *,
    ca_certs: CACerts,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
    now: dt.datetime | None = None,
) -> Any:
    """``grpc.ssl_channel_credentials`` whose trust anchors are `root_certificates`.

    Use the credentials only for a channel whose TLS host name is `host` (`secure_channel`
    ties the two together). `private_key` and `certificate_chain` (PEM) are the client's
    certificate for mutual TLS, passed on to grpc unchanged.

    Returns:
        A ``grpc.ChannelCredentials``.

    Raises:
        As `root_certificates`.
    """
    roots = root_certificates(policy, host, ca_certs=ca_certs, now=now)
    grpc: Any = importlib.import_module("grpc")
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=private_key, certificate_chain=certificate_chain
    )


def secure_channel(
    target: str,
    policy: Policy | PolicyProvider | Callable[[], Policy],
    *,
    ca_certs: CACerts,
    options: Sequence[tuple[str, Any]] | None = None,
    compression: Any = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
    now: dt.datetime | None = None,
) -> Any:
    """``grpc.secure_channel(target, channel_credentials(…), options, compression)``, with the
    pins looked up for the name grpcio verifies: ``grpc.ssl_target_name_override`` if set,
    else ``grpc.default_authority``, else the target's host.

    `target` is ``host[:port]``, ``[v6addr][:port]``, ``dns:[//authority/]host[:port]``,
    ``ipv4:addr[:port]`` or ``ipv6:[addr][:port]``; other name resolvers (``unix:``, ``xds:``,
    address lists) are refused with `HostError`: use `channel_credentials` with the TLS host
    name yourself.

    Returns:
        A ``grpc.Channel``.
    """
    host = _tls_host(target, options or ())
    credentials = channel_credentials(
        policy,
        host,
        ca_certs=ca_certs,
        private_key=private_key,
        certificate_chain=certificate_chain,
        now=now,
    )
    grpc: Any = importlib.import_module("grpc")
    return grpc.secure_channel(target, credentials, options=options, compression=compression)


def _read_ca_certs(ca_certs: CACerts) -> list[PinSource]:
    if isinstance(ca_certs, bytes | bytearray | memoryview):
        source = "ca_certs"
        found = load_sources(bytes(ca_certs), source=source)
    elif isinstance(ca_certs, str | os.PathLike):
        source = os.fspath(ca_certs)
        found = load_file(ca_certs)
    else:
        raise TypeError(
            f"ca_certs must be PEM/DER bytes or a file path, got {type(ca_certs).__name__}"
        )
    for item in found:
        if item.kind != "certificate":
            where = f", line {item.line}" if item.line else ""
            raise CertificateLoadError(
                f"{source}{where}: a {item.kind} in a CA bundle; ca_certs holds the CA "
                "certificates the client trusts, nothing else"
            )
    return found


def _pinned_anchors(
    host: str, rule: DomainRule, certificates: Iterable[PinSource]
) -> list[PinSource]:
    if rule.leaf_pins:
        raise unenforceable(
            host,
            rule,
            CLIENT,
            "grpcio has no verification callback (grpc/grpc#32635), so certpin pins it by "
            "narrowing its trust anchors, which cannot check the leaf's key; leaf_pins cannot "
            "be enforced. Pin CAs (ca_pins), or use grpclib with certpin.create_default_context",
        )
    slots = [pins for pins in (rule.pins, rule.ca_pins) if pins]
    certificates = list(certificates)
    # Only CA certificates: a non-CA certificate as an anchor would be accepted as the leaf
    # itself, where a ca_pins entry must not match.
    kept = [
        cert
        for cert in certificates
        if cert.is_ca is True and all(any(pin.matches(cert.der) for pin in s) for s in slots)
    ]
    if not kept:
        named = " and ".join(
            name for name, pins in (("pins", rule.pins), ("ca_pins", rule.ca_pins)) if pins
        )
        raise unenforceable(
            host,
            rule,
            CLIENT,
            f"none of the {len(certificates)} CA certificates in ca_certs is named by the "
            f"rule's {named}, and grpcio can only be pinned by keeping the pinned CA "
            "certificates as its trust anchors (it has no verification callback, "
            "grpc/grpc#32635); add the pinned root or intermediate certificates to ca_certs",
        )
    return kept


_TARGET = re.compile(
    r"(?:dns:(?://[^/]*/)?|ipv4:|ipv6:)?"
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))"
    r"(?::[0-9]{1,5})?\Z"
)


def _tls_host(target: str, options: Iterable[tuple[str, Any]]) -> str:
    settings = dict(options)
    override = settings.get("grpc.ssl_target_name_override")
    if isinstance(override, str) and override:
        return override
    authority = settings.get("grpc.default_authority")
    text = authority if isinstance(authority, str) and authority else target
    m = _TARGET.match(text)
    if m is None:
        raise HostError(
            f"cannot tell which host name grpcio verifies for {text[:200]!r}: give host:port, "
            "[v6]:port, dns:host:port, ipv4:addr:port or ipv6:[addr]:port, or set "
            "grpc.ssl_target_name_override; or call channel_credentials(policy, host, …)"
        )
    return m["v6"] or m["name"]
