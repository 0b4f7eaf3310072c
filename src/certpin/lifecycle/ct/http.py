"""How the watcher reads logs: GETs through the edges' one HTTP client (`certpin._io.http`'s
`Session`: keep-alive, bounded, gzip inflated within the bound, no redirects), with every
failure a `LogError`.

Logs are read with many small requests (tiles) or a few large ones (``get-entries``), so each
thread keeps one connection per log. Plain ``http://`` is accepted: a log's data is authenticated
by its signature and the Merkle tree, not by the transport (certspotter and Chrome do the same
for the data they verify).
"""

from __future__ import annotations

import socket
import ssl

from certpin._io import http
from certpin._version import __version__
from certpin.lifecycle.ct.errors import LogError

__all__ = ["DEFAULT_TIMEOUT", "HttpClient"]

#: seconds allowed for connecting and for each read of a response.
DEFAULT_TIMEOUT = 30.0
_USER_AGENT = f"certpin-ct/{__version__}"


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
        self._session = http.Session(
            context=context or ssl.create_default_context(),
            timeout=timeout,
            headers={"User-Agent": _USER_AGENT},
        )

    def close(self) -> None:
        self._session.close()

    def get(self, url: str, limit: int) -> tuple[int, bytes]:
        """(status, body) of ``GET url``; the body is at most `limit` bytes after inflating.

        Raises:
            LogError: connection, TLS or protocol failure, a body over `limit`, bad gzip.
        """
        try:
            answer = self._session.get(url, max_body=limit)
        except http.ERRORS as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else str(exc) or repr(exc)
            if isinstance(exc, ConnectionError):  # http.client's RemoteDisconnected is one
                reason = f"the server closed the connection ({reason})"
            raise LogError(f"{url}: {reason}") from None
        if answer.truncated:
            gzipped = (answer.headers.get("Content-Encoding") or "").strip().lower() == "gzip"
            inflated = " once inflated" if gzipped and answer.body else ""
            raise LogError(f"{url}: the response is larger than {limit} bytes{inflated}")
        return answer.status, answer.body
