"""Fetching a server's *verified* chain, for the tools that look at chains rather than enforce.

``certpin check``/``pin --connect`` (and lint, monitor, rotation checks) connect with
`certpin.tls.context.verifying_context`, which verifies exactly like a pinning context, and return
the chain OpenSSL verified (for decisions) and the chain the server sent (for display).

certpin's own TLS machinery (`certpin.tls.context`) is imported on first use, so the CLI starts
quickly.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass

from certpin._errors import CertpinError
from certpin.core.hosts import HostError, normalize_host

__all__ = [
    "ConnectError",
    "FetchedChain",
    "fetch_chain",
    "fetch_chain_async",
    "format_target",
    "parse_target",
]

DEFAULT_TIMEOUT = 10.0


class ConnectError(CertpinError):
    """The TLS connection could not be made or verified (the CLI's exit code 3)."""


@dataclass(frozen=True)
class FetchedChain:
    """What one connection showed: the verified chain (decisions) and the served one (display)."""

    host: str
    port: int
    servername: str
    verified: tuple[bytes, ...]
    served: tuple[bytes, ...]


def parse_target(text: str, default_port: int = 443) -> tuple[str, int]:
    """Split ``HOST[:PORT]``, ``[IPv6]:PORT``, a bare IPv6 address or an https:// URL.

    Raises:
        ValueError: the target does not parse; the message quotes it.
    """
    raw = text.strip()
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        if scheme.lower() != "https":
            raise ValueError(f"{text!r}: only https:// URLs can be checked")
        raw = raw.split("/", 1)[0]
    port_text = ""
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    elif raw.count(":") > 1:  # a bare IPv6 address: the port cannot be given without brackets
        host = raw
    else:
        host, _, port_text = raw.partition(":")
    if not host:
        raise ValueError(f"{text!r}: no host name")
    try:
        normalize_host(host)
    except HostError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if ":" in host or raw.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _context(cafile: str | os.PathLike[str] | None) -> ssl.SSLContext:
    from certpin.tls.context import verifying_context

    return verifying_context(cafile=cafile)


def _describe_failure(where: str, sni: str, timeout: float, exc: BaseException) -> ConnectError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason
        return ConnectError(f"{where}: certificate verification failed for {sni!r}: {detail}")
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"{where}: TLS handshake failed: {exc.reason or exc}")
    if isinstance(exc, TimeoutError):
        return ConnectError(f"{where}: timed out after {timeout:g} s")
    if isinstance(exc, socket.gaierror):
        return ConnectError(
            f"{where}: cannot resolve {where.rsplit(':', 1)[0]!r}: {exc.strerror or exc}"
        )
    if isinstance(exc, OSError):
        # asyncio wraps a refused connect as "Connect call failed (...)": say what errno says.
        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        return ConnectError(f"{where}: cannot connect: {reason}")
    raise exc  # Defensive: not a connection failure; let it surface


def fetch_chain(
    host: str,
    port: int,
    *,
    cafile: str | os.PathLike[str] | None = None,
    servername: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> FetchedChain:
    """Connect, verify like a pinning context would, and return the chains.

    Raises:
        ConnectError: TCP, TLS or certificate/host name verification failed.
    """
    from certpin.tls.context import served_chain, verified_chain

    sni = servername or host
    ctx = context or _context(cafile)
    where = format_target(host, port)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=sni) as tls:
                verified, served = verified_chain(tls), served_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise _describe_failure(where, sni, timeout, exc) from None
    if not verified:  # Defensive: CERT_REQUIRED guarantees a chain on a fresh handshake.
        raise ConnectError(f"{where}: the handshake produced no verified certificate chain")
    return FetchedChain(host, port, sni, verified, served)


async def fetch_chain_async(
    host: str,
    port: int,
    *,
    cafile: str | os.PathLike[str] | None = None,
    servername: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> FetchedChain:
    """`fetch_chain` on asyncio: many endpoints concurrently, each bounded by `timeout`."""
    import asyncio

    from certpin.tls.context import served_chain, verified_chain

    sni = servername or host
    ctx = context or _context(cafile)
    where = format_target(host, port)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=sni, ssl_handshake_timeout=timeout
            )
            tls = writer.get_extra_info("ssl_object")
            verified, served = verified_chain(tls), served_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise _describe_failure(where, sni, timeout, exc) from None
    finally:
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, ssl.SSLError, TimeoutError):
                pass
    if not verified:  # Defensive: CERT_REQUIRED guarantees a chain on a fresh handshake.
        raise ConnectError(f"{where}: the handshake produced no verified certificate chain")
    return FetchedChain(host, port, sni, verified, served)
