"""The one HTTP client of certpin's edges: bundle fetches, report uploads and monitor webhooks.

It is urllib.request's machinery (proxies from the environment; ``https`` through a proxy is a
CONNECT tunnel, so the TLS session and its pin check stay with the origin) assembled so that
every caller gets the same guarantees:

* **https through the caller's context only.** There is no default context to fall back to: the
  callers pass a pinning context, so a pinned bundle or report host is pin-validated
  (RFC 7469 §2.1.4: "the UA MUST validate the pins of the report URI's host").
* **No redirects.** A 3xx is returned like any other status: a redirect could lead to plain
  http, to an unpinned host, or carry a POST elsewhere.
* **Bounded.** `timeout` for each socket operation; at most `max_body` bytes of the answer are
  read; an optional overall `deadline` shuts the socket down, so a server that drips bytes
  cannot hold the caller longer than that.

Every HTTP status comes back as a `Response`. Network, TLS (pin failures included) and protocol
errors raise one of `ERRORS`; an overrun deadline raises `TimeoutError` (one of them too).

Nothing of certpin is imported here (`_io` sits below every layer): the callers bring the context.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from ssl import SSLContext
from typing import Any

__all__ = ["ERRORS", "Response", "is_loopback", "request"]

#: What a failed request raises: urllib's URLError and every socket and TLS error are OSErrors
#: (a `PinValidationError` too, and the `TimeoutError` of an overrun deadline), a malformed
#: answer is an HTTPException, a malformed URL or header a ValueError.
ERRORS = (OSError, http.client.HTTPException, ValueError)

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Response:
    """An HTTP answer of any status.

    Attributes:
        status, reason: the status line (``304``, ``"Not Modified"``).
        headers: the response headers.
        body: at most ``max_body`` bytes of the body.
        truncated: the server sent more than ``max_body`` bytes (the rest was not read).
    """

    status: int
    reason: str
    headers: Message
    body: bytes
    truncated: bool

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300


def request(
    url: str,
    *,
    context: SSLContext | None,
    timeout: float,
    max_body: int,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    deadline: float | None = None,
) -> Response:
    """Send one request and read the answer (see the module docstring for the guarantees).

    Args:
        url: an ``https://`` URL, or ``http://`` where the caller has decided plain HTTP is
            acceptable (each caller checks its own rule first).
        context: the TLS context for ``https`` (required: there is no default).
        timeout: seconds for each socket operation (connect, each read and write).
        max_body: the most bytes of the answer read.
        method, body, headers: the request.
        deadline: seconds for the whole request, connection to last byte; None = no bound
            beyond `timeout`.

    Raises:
        TimeoutError: `deadline` passed before the whole answer was read.
        OSError, http.client.HTTPException, ValueError: (`ERRORS`) the request failed.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "https" and context is None:
        raise ValueError(f"{url}: an https request needs the caller's TLS context")
    if scheme not in ("https", "http"):
        raise ValueError(f"{url}: only https:// and http:// URLs are supported")
    connections: list[http.client.HTTPConnection] = []
    opener = urllib.request.OpenerDirector()
    # No HTTPRedirectHandler and no HTTPErrorProcessor: every status is an answer.
    opener.add_handler(urllib.request.ProxyHandler())
    opener.add_handler(_HTTPHandler(connections))
    opener.add_handler(_HTTPSHandler(connections, context))
    req = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    fired = threading.Event()
    watchdog = None
    if deadline is not None:
        watchdog = threading.Timer(deadline, _cut, (connections, fired))
        watchdog.daemon = True
        watchdog.start()
    try:
        with opener.open(req, timeout=timeout) as answer:
            data = b""
            while len(data) <= max_body and not fired.is_set():
                chunk = answer.read1(min(_CHUNK, max_body + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
            response = Response(
                answer.status, answer.reason, answer.headers, data[:max_body], len(data) > max_body
            )
    except ERRORS:
        if fired.is_set():
            raise _overran(url, deadline) from None
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
    if fired.is_set():  # the cut can look like a clean end of the body
        raise _overran(url, deadline)
    return response


def is_loopback(url: str) -> bool:
    """True when `url`'s host is ``localhost`` or a loopback address: where the edges accept
    plain ``http://`` (a collector, a log or a webhook receiver on the same machine)."""
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host.rstrip(".") == "localhost":  # urlsplit lower-cases the host
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _overran(url: str, deadline: float | None) -> TimeoutError:
    return TimeoutError(f"{url}: no complete answer within the {deadline:g} s deadline")


def _cut(connections: list[http.client.HTTPConnection], fired: threading.Event) -> None:
    """Deadline reached: shut the request's socket down, which unblocks any read in progress."""
    fired.set()
    for conn in connections:
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


def _remembering(
    factory: type[http.client.HTTPConnection], connections: list[http.client.HTTPConnection]
) -> Callable[..., http.client.HTTPConnection]:
    def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = factory(host, **kwargs)
        connections.append(conn)
        return conn

    return connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connections: list[http.client.HTTPConnection]) -> None:
        super().__init__()
        self._connections = connections

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_remembering(http.client.HTTPConnection, self._connections), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(
        self, connections: list[http.client.HTTPConnection], context: SSLContext | None
    ) -> None:
        super().__init__(context=context)
        self._connections = connections
        self._certpin_context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        if self._certpin_context is None:  # Defensive: `request` refuses https without one
            raise ValueError("an https request needs the caller's TLS context")
        factory = _remembering(http.client.HTTPSConnection, self._connections)
        return self.do_open(factory, req, context=self._certpin_context)
