"""Loopback servers for the process-wide pinning tests (they run in the pytest process).

* `MitmProxy` - the interceptor: terminates TLS with its own certificate, records every
  application byte the client sends (``received``, as `TLSServer` does) and relays to the real
  server over a fresh TLS connection, as a real interception proxy does. So the same proxy is
  a working man in the middle for an unpinned host and must see zero bytes for a pinned one.
* `ScriptedTLSServer` subclasses speak just enough of a protocol for a client library to finish
  one exchange: `RoutedHTTPServer` (a pip index), `SMTPServer`, `IMAPServer`, `PostgresServer`
  (the SSLRequest exchange, then a trust-authenticated start-up).
* `ReportReceiver` - a plain-HTTP loopback collector that keeps every JSON body POSTed to it.
* `RedisServer` - a real ``redis-server`` with TLS on a free port (Debian's package).
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from _support.servers import (
    IO_TIMEOUT,
    LoopbackHTTPServer,
    TLSServer,
    _read_http_request,
    free_port,
)

__all__ = [
    "CountingTLSServer",
    "IMAPServer",
    "MitmProxy",
    "PostgresServer",
    "RedisServer",
    "ReportReceiver",
    "RoutedHTTPServer",
    "SMTPServer",
    "http_response",
]

#: PostgreSQL's SSLRequest: length 8, then the code 80877103 (1234 in the high 16 bits, 5679
#: in the low; protocol docs, "SSL Session Encryption").
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def http_response(body: bytes, content_type: str = "text/plain", status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class _Reader:
    """Buffered reads from a TLS socket; every byte read is passed to `sink` (the count)."""

    def __init__(self, tls: ssl.SSLSocket, sink: Callable[[bytes], None]) -> None:
        self.tls = tls
        self.sink = sink
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.tls.recv(65536)
        if not chunk:
            return False
        self.sink(chunk)
        self.buf += chunk
        return True

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            if not self._fill():
                return b""
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                return b""
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class CountingTLSServer(TLSServer):
    """A `TLSServer` that also counts accepted TCP connections (``connections``): a client
    that gave up inside the handshake still shows it reached the server."""

    name = "counting-tls-server"
    connections = 0

    def _before_tls(self, conn: socket.socket) -> bool:
        with self._lock:
            self.connections += 1
        return super()._before_tls(conn)


class ScriptedTLSServer(TLSServer):
    """A `TLSServer` whose conversation after the handshake is `converse` (override it).

    ``received``/``handshakes`` mean what they mean for `TLSServer`; ``pre_tls`` keeps the
    cleartext bytes read before the handshake (PostgreSQL's SSLRequest).
    """

    name = "scripted-tls-server"
    #: True: read PostgreSQL's SSLRequest and answer "S" before the TLS handshake.
    postgres_prelude = False

    def __init__(self, certfile: Path | str, keyfile: Path | str, **kwargs: Any) -> None:
        self.pre_tls: list[bytes] = []
        super().__init__(certfile, keyfile, alpn=None, **kwargs)

    def converse(self, tls: ssl.SSLSocket, reader: _Reader) -> None:  # pragma: no cover
        raise NotImplementedError

    def _before_tls(self, conn: socket.socket) -> bool:
        if not self.postgres_prelude:
            return True
        request = _accept_ssl_request(conn)
        with self._lock:
            self.pre_tls.append(request)
        return request == SSL_REQUEST

    def _after_handshake(self, tls: ssl.SSLSocket, sink: Callable[[bytes], None]) -> None:
        try:
            self.converse(tls, _Reader(tls, sink))
        finally:
            self._send_close_notify(tls)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _accept_ssl_request(conn: socket.socket) -> bytes:
    """Read PostgreSQL's SSLRequest and answer "S" (go ahead with TLS) if it is one; returns
    the bytes read."""
    request = _recv_exact(conn, len(SSL_REQUEST))
    if request == SSL_REQUEST:
        conn.sendall(b"S")
    return request


class RoutedHTTPServer(ScriptedTLSServer):
    """HTTPS with a path table: ``routes[path] = (content type, body)``; anything else 404."""

    name = "routed-https"

    def __init__(
        self, certfile: Path | str, keyfile: Path | str, routes: dict[str, tuple[str, bytes]]
    ) -> None:
        self.routes = routes
        self.paths: list[str] = []
        super().__init__(certfile, keyfile)

    def converse(self, tls: ssl.SSLSocket, reader: _Reader) -> None:
        request = _read_http_request(tls, reader.sink)
        if not request:
            return
        path = request.split(b" ", 2)[1].decode("ascii", "replace") if b" " in request else ""
        path = path.split("?", 1)[0]
        with self._lock:
            self.paths.append(path)
        if path in self.routes:
            content_type, body = self.routes[path]
            tls.sendall(http_response(body, content_type))
        else:
            tls.sendall(http_response(b"not found", status="404 Not Found"))


class SMTPServer(ScriptedTLSServer):
    """SMTP over implicit TLS (port 465 style): greeting, EHLO/HELO, NOOP, QUIT."""

    name = "smtps"

    def converse(self, tls: ssl.SSLSocket, reader: _Reader) -> None:
        tls.sendall(b"220 localhost certpin test ESMTP\r\n")
        while True:
            line = reader.line()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                tls.sendall(b"250-localhost\r\n250 HELP\r\n")
            elif verb in (b"HELO", b"NOOP", b"RSET"):
                tls.sendall(b"250 OK\r\n")
            elif verb == b"QUIT":
                tls.sendall(b"221 Bye\r\n")
                return
            else:
                tls.sendall(b"502 not implemented\r\n")


class IMAPServer(ScriptedTLSServer):
    """IMAP over implicit TLS (port 993 style): greeting, CAPABILITY, NOOP, LOGOUT."""

    name = "imaps"

    def converse(self, tls: ssl.SSLSocket, reader: _Reader) -> None:
        tls.sendall(b"* OK certpin test IMAP4rev1 ready\r\n")
        while True:
            line = reader.line()
            if not line:
                return
            tag, _, rest = line.partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command == b"CAPABILITY":
                tls.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK CAPABILITY completed\r\n")
            elif command == b"NOOP":
                tls.sendall(tag + b" OK NOOP completed\r\n")
            elif command == b"LOGOUT":
                tls.sendall(b"* BYE certpin test\r\n" + tag + b" OK LOGOUT completed\r\n")
                return
            else:
                tls.sendall(tag + b" BAD unknown command\r\n")


def _pg_message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


class PostgresServer(ScriptedTLSServer):
    """The PostgreSQL wire protocol as far as ``asyncpg.connect`` and ``close`` need it:
    SSLRequest answered "S", TLS, StartupMessage, AuthenticationOk with the parameters asyncpg
    reads, ReadyForQuery, then Terminate. ``startups`` keeps each StartupMessage payload."""

    name = "postgres-tls"
    postgres_prelude = True

    def __init__(self, certfile: Path | str, keyfile: Path | str) -> None:
        self.startups: list[bytes] = []
        super().__init__(certfile, keyfile)

    def converse(self, tls: ssl.SSLSocket, reader: _Reader) -> None:
        head = reader.exact(4)
        if len(head) < 4:
            return
        (length,) = struct.unpack("!i", head)
        startup = reader.exact(length - 4)
        with self._lock:
            self.startups.append(startup)
        params = {
            b"server_version": b"15.0",
            b"server_encoding": b"UTF8",
            b"client_encoding": b"UTF8",
            b"DateStyle": b"ISO, MDY",
            b"integer_datetimes": b"on",
            b"TimeZone": b"UTC",
            b"standard_conforming_strings": b"on",
        }
        out = _pg_message(b"R", struct.pack("!i", 0))
        for key, value in params.items():
            out += _pg_message(b"S", key + b"\0" + value + b"\0")
        out += _pg_message(b"K", struct.pack("!ii", 4242, 4242))
        out += _pg_message(b"Z", b"I")
        tls.sendall(out)
        while True:
            kind = reader.exact(1)
            if not kind or kind == b"X":
                return
            (length,) = struct.unpack("!i", reader.exact(4))
            reader.exact(length - 4)
            # Anything else (a query) is refused; asyncpg's connect/close send none.
            tls.sendall(
                _pg_message(b"E", b"SERROR\0C0A000\0Mnot supported by the test server\0\0")
                + _pg_message(b"Z", b"I")
            )


class MitmProxy(CountingTLSServer):
    """A TLS interception proxy with a certificate of its own (see the module docstring).

    ``received[i]`` is every application byte the client sent on the i-th connection whose
    handshake (with the proxy's certificate) completed; ``handshakes`` counts them. A pinned
    client must leave every entry empty. Each accepted connection is relayed to `upstream`
    (TLS, verified with `upstream_ctx`; PostgreSQL's SSLRequest first with `postgres`).
    """

    name = "mitm-proxy"

    def __init__(
        self,
        certfile: Path | str,
        keyfile: Path | str,
        upstream: tuple[str, int],
        upstream_ctx: ssl.SSLContext,
        *,
        postgres: bool = False,
        session_tickets: bool = True,
    ) -> None:
        self.upstream = upstream
        self.upstream_ctx = upstream_ctx
        self.postgres = postgres
        super().__init__(certfile, keyfile, alpn=None, session_tickets=session_tickets)

    def _before_tls(self, conn: socket.socket) -> bool:
        if not super()._before_tls(conn):
            return False
        return not self.postgres or _accept_ssl_request(conn) == SSL_REQUEST

    def _after_handshake(self, tls: ssl.SSLSocket, sink: Callable[[bytes], None]) -> None:
        raw = socket.create_connection(self.upstream, timeout=IO_TIMEOUT)
        if self.postgres:
            raw.sendall(SSL_REQUEST)
            if _recv_exact(raw, 1) != b"S":
                raw.close()
                return
        upstream = self.upstream_ctx.wrap_socket(raw, server_hostname=self.upstream[0])
        self._track(upstream)
        try:
            _relay(tls, upstream, sink, self._stopping)
        finally:
            self._untrack(upstream)
            with contextlib.suppress(OSError):
                upstream.close()


def _relay(
    client: ssl.SSLSocket,
    upstream: ssl.SSLSocket,
    sink: Callable[[bytes], None],
    stopping: threading.Event,
) -> None:
    """Copy bytes both ways until either side closes, on one thread (an OpenSSL connection
    must not be read and written by two threads at once). Non-blocking: a read that only
    processed a TLS 1.3 session ticket must not stall the other direction."""
    peers = {client: upstream, upstream: client}
    for sock in peers:
        sock.setblocking(False)
    idle_since = time.monotonic()
    while not stopping.is_set():
        ready = [s for s in peers if s.pending()]
        if not ready:
            ready, _, _ = select.select(list(peers), [], [], 0.1)
        if not ready:
            if time.monotonic() - idle_since > IO_TIMEOUT:
                return
            continue
        idle_since = time.monotonic()
        for src in ready:
            try:
                data = src.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                continue
            if not data:
                return
            if src is client:
                sink(data)
            _send_all(peers[src], data)


def _send_all(sock: ssl.SSLSocket, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + IO_TIMEOUT
    while view:
        try:
            sent = sock.send(view)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            if time.monotonic() > deadline:
                raise TimeoutError("relay: peer does not read") from None
            select.select([sock], [sock], [], 0.1)
            continue
        view = view[sent:]


class ReportReceiver(LoopbackHTTPServer):
    """A plain-HTTP collector on 127.0.0.1: ``reports`` holds every JSON body POSTed."""

    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    document: Any = json.loads(body)
                except ValueError:
                    document = {"unparsable": body.decode("utf-8", "replace")}
                receiver.reports.append(document)
                receiver.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        super().__init__(Handler)

    def url(self, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}/report"


class RedisServer:
    """A real ``redis-server`` listening with TLS only on 127.0.0.1 (``--port 0``)."""

    def __init__(self, certfile: Path, keyfile: Path, cafile: Path, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "redis.log"
        self.stderr = directory / "redis.stderr"
        with self.stderr.open("wb") as stderr:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [
                    binary,
                    "--port", "0",
                    "--bind", "127.0.0.1",
                    "--tls-port", str(self.port),
                    "--tls-cert-file", str(certfile),
                    "--tls-key-file", str(keyfile),
                    "--tls-ca-cert-file", str(cafile),
                    "--tls-auth-clients", "no",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(directory),
                    "--logfile", str(self.log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )  # fmt: skip

    def wait_ready(self, ctx: ssl.SSLContext, timeout: float = 10.0) -> None:
        """Wait until a TLS PING answers +PONG; raise RuntimeError with the log otherwise
        (`no_tls` tells a build without TLS apart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                        tls.sendall(b"PING\r\n")
                        if tls.recv(64).startswith(b"+PONG"):
                            return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start with TLS:\n{self.output()[-2000:]}")

    def output(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in (self.stderr, self.log) if path.exists()
        )

    def no_tls(self) -> bool:
        """True when the binary refused the TLS options (built without TLS support)."""
        text = self.output().lower()
        return "tls" in text and ("bad directive" in text or "not supported" in text)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
