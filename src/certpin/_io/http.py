"""The one HTTP client of certpin's edges: bundle fetches, report uploads, monitor webhooks (one
request each: `request`) and Certificate Transparency log reads (many requests to one server:
`Session`, which keeps connections alive and inflates gzip within the bound).

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

import base64
import contextlib
import http.client
import ipaddress
import socket
import threading
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from ssl import SSLContext
from typing import Any

__all__ = ["ERRORS", "Response", "Session", "is_loopback", "request"]

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
            data = _read(answer, max_body, fired)
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


class Session:
    """Keep-alive GETs, for a reader that makes many requests to a few servers (a CT log read
    tile by tile). Thread-safe: each thread keeps one connection per origin and reuses it.

    The guarantees of `request` hold (https through the caller's context only, no redirects,
    `timeout` per socket operation, at most `max_body` bytes read, proxies from the
    environment: an https origin through a CONNECT tunnel), and one more: an answer with
    ``Content-Encoding: gzip`` (asked for with ``Accept-Encoding``) is inflated, and neither the
    bytes read nor the bytes inflated exceed `max_body` (a gzip bomb is cut, not inflated).

    Args:
        context: the TLS context for ``https`` (None: only ``http://`` URLs are accepted).
        timeout: seconds for each socket operation.
        headers: sent with every request (a ``User-Agent``, say).
    """

    def __init__(
        self,
        *,
        context: SSLContext | None,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = timeout
        self._context = context
        self._headers = {**(headers or {}), "Accept-Encoding": "gzip, identity"}
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every connection; the session stays usable (it opens new ones)."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def get(self, url: str, *, max_body: int) -> Response:
        """``GET url``: the answer, its body inflated if it was gzipped.

        Raises:
            OSError, http.client.HTTPException: (`ERRORS`) the request failed.
            ValueError: (`ERRORS`) a URL certpin does not send to, an unsupported
                ``Content-Encoding``, a gzip body that is corrupt, cut short or followed by
                other bytes.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https" and self._context is None:
            raise ValueError(f"{url}: an https request needs the caller's TLS context")
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{url}: only https:// and http:// URLs are supported")
        # A kept-alive connection the server has since closed fails on first use: retry once on
        # a fresh one. A fresh connection's failure is the answer.
        for fresh in (False, True):
            conn, proxied = self._connection(parts, fresh)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            headers = self._headers
            if proxied is not None:  # a plain request through a proxy names the whole URL
                target = urllib.parse.urlunsplit((*parts[:3], parts.query, ""))
                headers = {**headers, **proxied}
            try:
                conn.request("GET", target, headers=headers)
                answer = conn.getresponse()
                response = _inflated(answer, max_body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop(conn)
                if fresh:
                    raise
                continue
            except BaseException:
                self._drop(conn)
                raise
            if response.truncated or answer.will_close:
                self._drop(conn)  # the rest of the body is unread, or the server said so
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(
        self, parts: urllib.parse.SplitResult, fresh: bool
    ) -> tuple[http.client.HTTPConnection, dict[str, str] | None]:
        """This thread's connection to `parts`' origin (a new one if `fresh`), and for a plain
        request through a proxy the headers for the proxy (else None). The proxy is chosen
        when the connection is made."""
        pool: dict[tuple[str, str], tuple[http.client.HTTPConnection, dict[str, str] | None]]
        pool = self._local.__dict__.setdefault("pool", {})
        origin = (parts.scheme, parts.netloc)
        kept = pool.get(origin)
        if kept is not None and not fresh:
            return kept
        if kept is not None:
            self._drop(kept[0])
        proxy = _proxy(parts)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host, host_port = (parts.hostname or "", port) if proxy is None else proxy[:2]
        proxied = None
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, host_port, timeout=self.timeout, context=self._context
            )
            if proxy is not None:  # the TLS session, its name check and its pins: the origin's
                conn.set_tunnel(parts.hostname or "", port, headers=proxy[2])
        else:
            conn = http.client.HTTPConnection(host, host_port, timeout=self.timeout)
            if proxy is not None:
                proxied = proxy[2]
        pool[origin] = (conn, proxied)
        with self._lock:
            self._all.add(conn)
        return conn, proxied

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._all.discard(conn)
        pool = getattr(self._local, "pool", {})
        for origin, (kept, _proxied) in list(pool.items()):
            if kept is conn:
                del pool[origin]


def _proxy(parts: urllib.parse.SplitResult) -> tuple[str, int, dict[str, str]] | None:
    """The environment's proxy for this URL (as urllib chooses it: ``<scheme>_proxy``, unless
    ``no_proxy`` names the host): (host, port, headers for it), or None."""
    url = urllib.request.getproxies().get(parts.scheme)
    if not url or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    if "://" not in url:
        url = "http://" + url
    proxy = urllib.parse.urlsplit(url)
    if not proxy.hostname:
        raise ValueError(f"the {parts.scheme} proxy {url!r} names no host")
    headers: dict[str, str] = {}
    if proxy.username is not None:
        user = urllib.parse.unquote(proxy.username)
        password = urllib.parse.unquote(proxy.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {token}"
    return proxy.hostname, proxy.port or 80, headers


def _read(answer: http.client.HTTPResponse, max_body: int, stop: threading.Event | None) -> bytes:
    """At most ``max_body + 1`` bytes of the body (one more than allowed says it was longer),
    read in chunks until the body ends or `stop` is set."""
    data = b""
    while len(data) <= max_body and not (stop is not None and stop.is_set()):
        # read1: whatever has arrived, so a deadline is looked at between a dripping server's
        # bytes
        chunk = answer.read1(min(_CHUNK, max_body + 1 - len(data)))
        if not chunk:
            answer.close()  # the body is complete: a kept-alive connection is free again
            break
        data += chunk
    return data


def _inflated(answer: http.client.HTTPResponse, max_body: int) -> Response:
    """The answer with its body read within `max_body`, and inflated within it if gzipped."""
    encoding = (answer.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise ValueError(f"unsupported Content-Encoding {encoding[:40]!r}")
    length = answer.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_body:
        return Response(answer.status, answer.reason, answer.headers, b"", True)
    data = _read(answer, max_body, None)
    if len(data) > max_body or encoding == "identity":
        return Response(
            answer.status, answer.reason, answer.headers, data[:max_body], len(data) > max_body
        )
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_body + 1)
    except zlib.error as exc:
        raise ValueError(f"bad gzip body: {exc}") from None
    if len(out) > max_body or inflater.unconsumed_tail:
        return Response(answer.status, answer.reason, answer.headers, out[:max_body], True)
    if not inflater.eof or inflater.unused_data:
        raise ValueError("truncated gzip body, or bytes after it")
    return Response(answer.status, answer.reason, answer.headers, out, False)


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
