"""The OCSP response a server staples (RFC 6066 §8 status_request), for the revocation checks.

Python's `ssl` module cannot ask for a stapled response, so this is a second, separate handshake
made with pyOpenSSL (`Connection.request_ocsp` and `Context.set_ocsp_client_callback`, the one
well-kept binding that exposes OpenSSL's status_request), installed with the ``revocation``
extra. That handshake does not verify the server: nothing of it is trusted but the response, and
`certpin.lifecycle.revocation.verify_ocsp` accepts the response only when it is signed for the
CA of the chain certpin's *own* fetch verified and names that chain's leaf (a response about
another certificate, e.g. from another server behind a load balancer, is rejected as such).

Without pyOpenSSL the staple is "not checked" and the checks go on with the OCSP responder and the
CRL; a connection failure is noted the same way. Bounded by `timeout` for the whole handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import select
import socket
import time
from collections.abc import Sequence

from cryptography import x509

from certpin.lifecycle.revocation import (
    DEADLINE,
    Revocation,
    RevocationCache,
    Staple,
    check_chain,
    ocsp_urls,
)

__all__ = ["INSTALL_HINT", "check_live", "fetch_staple"]

INSTALL_HINT = "not checked (pip install certpin[revocation])"
_MAX_STAPLE = 64 * 1024


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def fetch_staple(host: str, port: int, servername: str, timeout: float) -> Staple:
    """Handshake with `host`:`port` asking for a stapled OCSP response (SNI `servername`).

    Never raises: a missing extra or a failed connection is a `Staple` without a response whose
    note says why.
    """
    try:
        from OpenSSL import SSL
    except ImportError:
        return Staple(None, INSTALL_HINT)
    got: list[bytes] = []

    def on_status(_conn: SSL.Connection, data: bytes, _arg: object) -> bool:
        got.append(bytes(data[: _MAX_STAPLE + 1]))
        return True  # accept here; the response is verified against the verified chain later

    end = time.monotonic() + timeout
    try:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_ocsp_client_callback(on_status)
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.setblocking(False)
            conn = SSL.Connection(context, sock)
            if not _is_ip(servername):
                conn.set_tlsext_host_name(servername.encode("idna"))
            conn.request_ocsp()
            conn.set_connect_state()
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return Staple(None, f"not checked (no handshake within {timeout:g} s)")
                try:
                    conn.do_handshake()
                    break
                except SSL.WantReadError:
                    select.select([sock], [], [], left)
                except SSL.WantWriteError:
                    select.select([], [sock], [], left)
    except (OSError, SSL.Error, UnicodeError) as exc:
        return Staple(None, f"not checked (connection failed: {exc or type(exc).__name__})")
    if not got or not got[0]:
        return Staple(None, "none stapled")
    if len(got[0]) > _MAX_STAPLE:
        return Staple(None, f"not checked (the stapled response is larger than {_MAX_STAPLE} B)")
    return Staple(got[0], "stapled")


def check_live(
    host: str,
    port: int,
    servername: str,
    chain: Sequence[bytes],
    now: dt.datetime,
    *,
    timeout: float,
    deadline: float = DEADLINE,
    cache: RevocationCache | None = None,
) -> list[Revocation]:
    """`check_chain` for a chain just fetched from `host`:`port`, the server's staple first.

    The staple is asked for only when the leaf names an OCSP responder: a server gets the
    response it staples from that responder, so a leaf without one has nothing to staple (and
    the endpoint is spared a second handshake).
    """
    if len(chain) < 2:
        return []
    leaf = x509.load_der_x509_certificate(chain[0])
    if ocsp_urls(leaf):
        staple = fetch_staple(host, port, servername, min(timeout, deadline))
    else:
        staple = Staple(None, "not requested (the certificate names no OCSP responder)")
    return check_chain(chain, now, staple=staple, timeout=timeout, deadline=deadline, cache=cache)
