"""A small, bounded HTTP/1.1 client for reading logs: keep-alive, gzip, no redirects.

Logs are read with many small requests (tiles) or a few large ones (``get-entries``), so each
thread keeps one connection per host. Every body is bounded before it is read into memory (the
``Content-Length`` checked, then at most `limit` + 1 bytes read; gzip is inflated up to `limit`
only), so a hostile log cannot exhaust memory. Plain ``http://`` is accepted: a log's data is
authenticated by its signature and the Merkle tree, not by the transport (certspotter and Chrome
do the same for the data they verify).

The standard library's `http.client` is enough here: no dependency for the watcher.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import zlib
from urllib.parse import urlsplit

from certpin._version import __version__
from certpin.lifecycle.ct.errors import LogError

__all__ = ["DEFAULT_TIMEOUT", "HttpClient"]

#: seconds allowed for connecting and for each read of a response.
DEFAULT_TIMEOUT = 30.0
_USER_AGENT = f"certpin-ct/{__version__}"
_Connection = http.client.HTTPConnection | http.client.HTTPSConnection


class HttpClient:
    """GETs with per-thread keep-alive connections; thread-safe.

    Args:
        timeout: socket timeout in seconds.
        context: the TLS context for https (default: the system trust store).
    """

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, context: ssl.SSLContext | None = None
    ) -> None:
        self.timeout = timeout
        self._context = context or ssl.create_default_context()
        self._local = threading.local()
        self._all: set[_Connection] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        # Connections of threads that are gone are closed now; the live threads open new ones.
        self._local = threading.local()

    def _connection(self, scheme: str, netloc: str, fresh: bool) -> _Connection:
        pool: dict[tuple[str, str], _Connection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        conn = pool.get((scheme, netloc))
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
            with self._lock:
                self._all.discard(conn)
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self._context)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
        pool[(scheme, netloc)] = conn
        with self._lock:
            self._all.add(conn)
        return conn

    def get(self, url: str, limit: int) -> tuple[int, bytes]:
        """(status, body) of ``GET url``; the body is at most `limit` bytes after inflating.

        Raises:
            LogError: connection, TLS or protocol failure, a body over `limit`, bad gzip.
        """
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "gzip, identity"}
        # A kept-alive connection the server has since closed fails on first use: retry once on
        # a fresh one. A fresh connection's failure is the answer.
        for fresh in (False, True):
            conn = self._connection(parts.scheme, parts.netloc, fresh)
            try:
                conn.request("GET", target or "/", headers=headers)
                response = conn.getresponse()
                return response.status, _read_body(response, limit, url)
            except LogError:
                conn.close()
                raise
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if fresh:
                    raise LogError(f"{url}: the server closed the connection") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                reason = "timed out" if isinstance(exc, socket.timeout) else str(exc) or repr(exc)
                raise LogError(f"{url}: {reason}") from None
        raise AssertionError("unreachable")  # pragma: no cover


def _read_body(response: http.client.HTTPResponse, limit: int, url: str) -> bytes:
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        response.close()
        raise LogError(f"{url}: unsupported Content-Encoding {encoding[:40]!r}")
    length = response.getheader("Content-Length")
    # Compressed or not, never more than `limit` bytes are read off the wire.
    if length is not None and length.isdigit() and int(length) > limit:
        response.close()
        raise LogError(f"{url}: the response is larger than {limit} bytes")
    body = response.read(limit + 1)
    if len(body) > limit or response.read(1):
        response.close()
        raise LogError(f"{url}: the response is larger than {limit} bytes")
    if encoding == "identity":
        return body
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise LogError(f"{url}: bad gzip body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise LogError(f"{url}: the inflated response is larger than {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise LogError(f"{url}: truncated gzip body, or bytes after it")
    return out
