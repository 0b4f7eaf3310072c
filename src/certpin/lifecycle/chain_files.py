"""``--chain DOMAIN=FILE`` for the lifecycle tools: read a PEM chain and *verify* it.

The chain is verified against ``--cafile`` (default: the system CA file) with
``cryptography.x509.verification``: the same path building a client does, so the root comes from
the trust store even when the file does not hold it (RFC 7469 §2.6: pins are checked against the
validated chain). `certpin.lifecycle.chains` builds its `DomainChain` values on top of this.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable

from certpin._errors import ConfigurationError
from certpin.core.hosts import HostError, HostPattern

__all__ = [
    "default_cafile",
    "example_host",
    "leaf_names",
    "parse_chain_specs",
    "read_certs",
    "verify",
    "verify_chain_file",
]

#: the label of `example_host`.
_EXAMPLE_LABEL = "certpin-probe"


def example_host(name: str) -> str:
    """A concrete host for a certificate name: the name itself, or ``certpin-probe.base`` for
    ``*.base``.

    Only for what needs one host to talk about: the SNI sent to fetch a wildcard key's chain,
    the name a wildcard certificate is verified for. Never to decide which rule covers what
    (that is `HostPattern.matches`, `DomainRule.covers`, `Policy.lookup`).
    """
    return f"{_EXAMPLE_LABEL}.{name[2:]}" if name.startswith("*.") else name


def parse_chain_specs(specs: Iterable[str], option: str = "--chain") -> dict[str, str]:
    """``DOMAIN=VALUE`` items -> {canonical policy key: VALUE}.

    Raises:
        ConfigurationError: an item without ``=``, an invalid domain, or a domain given twice.
    """
    out: dict[str, str] = {}
    for spec in specs:
        domain, sep, value = spec.partition("=")
        if not sep or not domain.strip() or not value.strip():
            raise ConfigurationError(
                f"{option} {spec!r}: expected DOMAIN=VALUE, e.g. {option} api.example.com="
                + ("chain.pem" if option == "--chain" else "127.0.0.1:8443")
            )
        try:
            key = HostPattern.parse(domain.strip()).text
        except HostError as exc:
            raise ConfigurationError(f"{option} {spec!r}: invalid domain: {exc}") from None
        if key in out:
            raise ConfigurationError(f"{option} {spec!r}: {key!r} is given twice")
        out[key] = value.strip()
    return out


def read_certs(path: str, what: str) -> list[bytes]:
    from certpin.core.sources import load_file

    sources = load_file(path)
    certs = [s.der for s in sources if s.kind == "certificate"]
    if not certs:
        raise ConfigurationError(f"{path}: {what} holds no certificate")
    return certs


def default_cafile() -> str:
    """The system CA file OpenSSL would use, for verifying ``--chain`` files."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise ConfigurationError(
        "no system CA file found to verify --chain files against: give --cafile FILE"
    )


def verify_chain_file(
    path: str, cafile: str | None, now: dt.datetime | None = None
) -> tuple[tuple[bytes, ...], list[str]]:
    """Verify a PEM chain (leaf first) for its leaf's first name; returns (chain, leaf names).

    The names are the leaf's SubjectAltName DNS names and IP addresses, in order.

    Raises:
        ConfigurationError: as `chain_for_file`, or a leaf without names.
    """
    from cryptography import x509

    certs = read_certs(path, "the chain file")
    names = leaf_names(x509.load_der_x509_certificate(certs[0]), path)
    if not names:
        raise ConfigurationError(f"{path}: the leaf certificate has no SubjectAltName names")
    return verify(certs, example_host(names[0]), path, cafile, now), names


def leaf_names(leaf: object, path: str | None = None) -> list[str]:
    """The SubjectAltName DNS names and IP addresses of a certificate, in order.

    Raises:
        ConfigurationError: the certificate's extensions do not parse (cryptography parses
            them only when asked, so a certificate that loaded may still fail here); the
            message names `path` when it is given.
    """
    from cryptography import x509

    assert isinstance(leaf, x509.Certificate)
    out = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for name in san:
            if isinstance(name, x509.DNSName):
                out.append(name.value)
            elif isinstance(name, x509.IPAddress):
                out.append(str(name.value))
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:  # malformed DER in an extension, an IP address of 1 byte...
        where = f"{path}: " if path else ""
        raise ConfigurationError(
            f"{where}the leaf certificate's extensions do not parse: {exc}"
        ) from None
    return out


def verify(
    certs: list[bytes], host: str, path: str, cafile: str | None, now: dt.datetime | None
) -> tuple[bytes, ...]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import verification

    anchors = read_certs(cafile or default_cafile(), "the CA file")
    leaf = x509.load_der_x509_certificate(certs[0])
    intermediates = [x509.load_der_x509_certificate(d) for d in certs[1:]]
    store = verification.Store([x509.load_der_x509_certificate(d) for d in anchors])
    subject: x509.DNSName | x509.IPAddress
    try:
        try:
            subject = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            subject = x509.DNSName(host)  # ValueError for a name no DNS name can be
        verifier = (
            verification.PolicyBuilder()
            .store(store)
            .time(now or dt.datetime.now(dt.UTC))
            .build_server_verifier(subject)
        )
        built = verifier.verify(leaf, intermediates)
    except (verification.VerificationError, ValueError) as exc:
        raise ConfigurationError(
            f"{path}: the chain does not verify for {host!r} against "
            f"{cafile or 'the system CA file'}: {exc}"
        ) from None
    return tuple(c.public_bytes(Encoding.DER) for c in built)
