"""Fetching a server's *verified* chain, for the tools that look at chains rather than enforce.

``certpin check``/``pin --connect`` (and lint, monitor, rotation checks) connect with
`certpin.tls.context.verifying_context`, which verifies exactly like a pinning context, and return
the chain OpenSSL verified (for decisions) and the chain the server sent (for display).

The pinning context's module (`certpin.tls.context`, which loads the core's verdict) is imported
on first use, so the CLI starts quickly.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from typing import TypedDict, Unpack

from certpin._errors import CertpinError
from certpin.core.hosts import HostError, normalize_host
from certpin.tls.sockets import served_chain, verified_chain

__all__ = [
    "ConnectError",
    "FetchOptions",
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


class FetchOptions(TypedDict, total=False):
    """The keyword arguments of `fetch_chain` and `fetch_chain_async`.

    Attributes:
        cafile: trust anchors (PEM) when no `context` is given (default: the system store).
        servername: the name sent as SNI and verified (default: the host).
        timeout: seconds for the connection and the handshake (default `DEFAULT_TIMEOUT`).
        context: the client context (default: `certpin.tls.context.verifying_context`, which
            verifies exactly like a pinning context).
    """

    cafile: str | os.PathLike[str] | None
    servername: str | None
    timeout: float
    context: ssl.SSLContext | None


@dataclass(frozen=True)
class _Attempt:
    """One connection to make: where, as whom, with what, within how long."""

    host: str
    port: int
    sni: str
    context: ssl.SSLContext
    timeout: float

    @classmethod
    def of(cls, host: str, port: int, options: FetchOptions) -> _Attempt:
        context = options.get("context")
        if context is None:
            from certpin.tls.context import verifying_context

            context = verifying_context(cafile=options.get("cafile"))
        sni = options.get("servername") or host
        return cls(host, port, sni, context, options.get("timeout", DEFAULT_TIMEOUT))

    @property
    def where(self) -> str:
        return format_target(self.host, self.port)

    def chains(self, tls: ssl.SSLSocket | ssl.SSLObject) -> FetchedChain:
        verified, served = verified_chain(tls), served_chain(tls)
        if not verified:  # Defensive: CERT_REQUIRED guarantees a chain on a fresh handshake.
            raise ConnectError(
                f"{self.where}: the handshake produced no verified certificate chain"
            )
        return FetchedChain(self.host, self.port, self.sni, verified, served)

    def failure(self, exc: BaseException) -> ConnectError:
        """The connection failure `exc` as a `ConnectError` that says what happened."""
        where, sni, timeout = self.where, self.sni, self.timeout
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


def fetch_chain(host: str, port: int, **options: Unpack[FetchOptions]) -> FetchedChain:
    """Connect, verify like a pinning context would, and return the chains.

    Raises:
        ConnectError: TCP, TLS or certificate/host name verification failed.
    """
    attempt = _Attempt.of(host, port, options)
    try:
        with socket.create_connection((host, port), timeout=attempt.timeout) as sock:
            with attempt.context.wrap_socket(sock, server_hostname=attempt.sni) as tls:
                return attempt.chains(tls)
    except (OSError, ssl.SSLError) as exc:
        raise attempt.failure(exc) from None


async def fetch_chain_async(host: str, port: int, **options: Unpack[FetchOptions]) -> FetchedChain:
    """`fetch_chain` on asyncio: many endpoints concurrently, each bounded by its timeout."""
    import asyncio

    attempt = _Attempt.of(host, port, options)
    timeout = attempt.timeout
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=attempt.context,
                server_hostname=attempt.sni,
                ssl_handshake_timeout=timeout,
            )
            return attempt.chains(writer.get_extra_info("ssl_object"))
    except (OSError, ssl.SSLError) as exc:
        raise attempt.failure(exc) from None
    finally:
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, ssl.SSLError, TimeoutError):
                pass
