"""Real loopback servers running in background threads, for end-to-end TLS tests.

* :class:`TLSServer` - minimal HTTPS/1.1 server (``Connection: close``) that records bytes.
* :class:`WebSocketTLSServer` - ``wss://`` echo server (websockets' sync server).
* :class:`ConnectProxy` - plain-TCP ``HTTP CONNECT`` proxy; every host resolves to loopback.
* :class:`TCPForwarder` - plain TCP port forwarder (reach a server under another name/port).
* :class:`LoopbackHTTPServer` - plain-HTTP server with a handler class of the caller's.
* `free_port`, `wait_port`, `wait_for` - for servers started in another process.

All are context managers. Failures of individual connections (a client aborting the TLS
handshake because a pin did not match, resets, timeouts...) are swallowed and recorded in
``.errors``; they never reach stderr or pytest's unhandled-thread-exception hook.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "DEFAULT_BODY",
    "ConnectProxy",
    "LoopbackHTTPServer",
    "TCPForwarder",
    "TLSServer",
    "WebSocketTLSServer",
    "default_response",
    "free_port",
    "wait_for",
    "wait_port",
]

DEFAULT_BODY = b"hello from certpin test server"
IO_TIMEOUT = 10.0  # per-socket timeout so a stuck peer can never hang a test
JOIN_TIMEOUT = 5.0


def default_response(body: bytes = DEFAULT_BODY) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n"
        b"\r\n" + body
    )


def wait_for(predicate: Callable[[], object], timeout: float = JOIN_TIMEOUT) -> bool:
    """Poll ``predicate`` until truthy or ``timeout`` seconds pass; returns its last truthiness."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server started by port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: Any = None, timeout: float = 10.0) -> None:
    """Wait until 127.0.0.1:`port` accepts a TCP connection; RuntimeError when it does not in
    `timeout` seconds or when `process` (a ``subprocess.Popen``) exits first."""

    def listening() -> bool:
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else b""
            raise RuntimeError(f"process exited: {stderr!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    if not wait_for(listening, timeout):
        raise RuntimeError(f"port {port} never opened")


class LoopbackHTTPServer:
    """A plain-HTTP ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral ``port``) answering with
    `handler`, served from a background thread while the context is entered."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(JOIN_TIMEOUT)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _hard_shutdown(sock: socket.socket) -> None:
    """Wake up any thread blocked on ``sock`` (works for SSLSocket too: bypasses its override)."""
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _ThreadedServer:
    """Listening socket + accept thread + one thread per connection, with clean shutdown."""

    name = "server"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._live: set[socket.socket] = set()
        self._accepting = False
        self._listener = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            self._listener.bind((host, 0))
            self._listener.listen(128)
            # Poll so the accept loop notices stop() without relying on close() waking accept().
            self._listener.settimeout(0.05)
        except BaseException:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._acceptor: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._acceptor is None:
            self._acceptor = threading.Thread(
                target=self._accept_loop, name=f"{self.name}-accept-{self.port}", daemon=True
            )
            self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(JOIN_TIMEOUT)
        self._listener.close()
        with self._lock:
            live = list(self._live)
            threads = list(self._threads)
        for sock in live:
            _hard_shutdown(sock)
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        with self._lock:
            leftovers = list(self._live)
            self._live.clear()
        for sock in leftovers:  # only if a handler thread is wedged past JOIN_TIMEOUT
            with contextlib.suppress(OSError):
                sock.close()

    close = stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def wait_idle(self, timeout: float = JOIN_TIMEOUT) -> bool:
        """Wait until every connection accepted so far has been fully handled.

        Call this after the client is done and before asserting on ``received``/``handshakes``:
        the server thread may still be finishing (e.g. noticing a client's abort).
        """
        deadline = time.monotonic() + timeout
        quiet_polls = 0
        while quiet_polls < 3:  # idle on consecutive polls: no accept()-to-thread window race
            if time.monotonic() >= deadline:
                return False
            quiet_polls = 0 if self._busy() else quiet_polls + 1
            time.sleep(0.01)
        return True

    def _busy(self) -> bool:
        with self._lock:
            if self._threads or self._accepting:
                return True
        if self._listener.fileno() == -1:
            return False
        try:  # a connection still queued in the kernel's backlog
            readable, _, _ = select.select([self._listener], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    # -- internals -------------------------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.add(sock)
        if self._stopping.is_set():
            _hard_shutdown(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.discard(sock)

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(exc)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            self._accepting = True
            conn.settimeout(IO_TIMEOUT)
            self._track(conn)
            thread = threading.Thread(
                target=self._run_handler, args=(conn,), name=f"{self.name}-conn", daemon=True
            )
            with self._lock:
                self._threads.add(thread)
                self._accepting = False
            thread.start()

    def _run_handler(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except Exception as exc:  # never let a connection error escape the thread
            self._record_error(exc)
        finally:
            self._untrack(conn)
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _handle(self, conn: socket.socket) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _read_http_request(sock: socket.socket, sink: Any = None) -> bytes:
    """Read one HTTP request (headers + Content-Length body). Returns b"" on immediate EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        if sink is not None:
            sink(chunk)
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            with contextlib.suppress(ValueError):
                length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        if sink is not None:
            sink(chunk)
        body += chunk
    return buf


class TLSServer(_ThreadedServer):
    """A threaded HTTPS server on loopback with an ephemeral port.

    ``received[i]`` holds every application byte received on the i-th connection whose TLS
    handshake completed (appended as they arrive); ``handshakes`` counts those connections.
    Connections whose handshake fails (e.g. the client rejected the certificate) leave no
    entry. ``server_names`` records the SNI of every ClientHello (None when absent).
    """

    name = "tls-server"

    def __init__(
        self,
        certfile: Path | str,
        keyfile: Path | str,
        *,
        host: str = "127.0.0.1",
        response: bytes | None = None,
        tls_versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
        alpn: Sequence[str] | None = ("http/1.1",),
        session_tickets: bool = True,
    ) -> None:
        self.response = default_response() if response is None else response
        self.tls_versions = tls_versions
        self.alpn = list(alpn) if alpn else None
        self.session_tickets = session_tickets
        self.received: list[bytes] = []
        self.handshakes = 0
        self.server_names: list[str | None] = []
        self.negotiated: list[dict[str, Any]] = []  # per handshake: version, cipher, alpn
        self._context = self._make_context(certfile, keyfile)
        super().__init__(host)

    def _make_context(self, certfile: Path | str, keyfile: Path | str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.fspath(certfile), os.fspath(keyfile))
        if self.tls_versions is not None:
            ctx.minimum_version, ctx.maximum_version = self.tls_versions
        if self.alpn:
            ctx.set_alpn_protocols(self.alpn)
        if not self.session_tickets:
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0
        ctx.sni_callback = self._on_sni
        return ctx

    def _on_sni(self, _sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.server_names.append(server_name)

    def set_certificate(self, certfile: Path | str, keyfile: Path | str) -> None:
        """Serve a different chain to connections accepted from now on."""
        ctx = self._make_context(certfile, keyfile)
        with self._lock:
            self._context = ctx

    def url(self, path: str = "/", hostname: str = "localhost") -> str:
        return f"https://{_format_host(hostname)}:{self.port}{path}"

    def total_received(self) -> bytes:
        with self._lock:
            return b"".join(self.received)

    def _handle(self, conn: socket.socket) -> None:
        if not self._before_tls(conn):
            return
        with self._lock:
            ctx = self._context
        # wrap_socket() detaches conn; track the SSLSocket *before* the handshake so that
        # stop() can wake a thread stuck in it.
        tls = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        self._track(tls)
        try:
            try:
                tls.do_handshake()
            except (OSError, ValueError) as exc:  # client aborted / rejected our certificate
                self._record_error(exc)
                return
            self._after_handshake(tls, self._open_entry(tls))
        except (OSError, ValueError) as exc:
            self._record_error(exc)
        finally:
            self._untrack(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def _before_tls(self, conn: socket.socket) -> bool:
        """Cleartext before the handshake (a subclass's protocol prelude); False drops `conn`."""
        return True

    def _open_entry(self, tls: ssl.SSLSocket) -> Callable[[bytes], None]:
        """Count a completed handshake and open its ``received`` entry; returns the sink that
        appends the connection's application bytes to it."""
        with self._lock:
            index = len(self.received)
            self.received.append(b"")
            self.handshakes += 1
            self.negotiated.append(
                {
                    "version": tls.version(),
                    "cipher": tls.cipher(),
                    "alpn": tls.selected_alpn_protocol(),
                }
            )

        def sink(chunk: bytes) -> None:
            with self._lock:
                self.received[index] += chunk

        return sink

    def _after_handshake(self, tls: ssl.SSLSocket, sink: Callable[[bytes], None]) -> None:
        """The conversation once the handshake is done: one HTTP request, then `response`."""
        request = _read_http_request(tls, sink)
        if request:
            tls.sendall(self.response)
            self._send_close_notify(tls)

    @staticmethod
    def _send_close_notify(tls: ssl.SSLSocket) -> None:
        """Send close_notify without waiting for the peer's (non-blocking unwrap)."""
        with contextlib.suppress(OSError, ValueError):
            tls.settimeout(0)
            tls.unwrap()


class TCPForwarder(_ThreadedServer):
    """Plain TCP forwarder ``127.0.0.1:port -> target``; lets a client reach a server under
    another address/name. ``connections`` counts accepted connections."""

    name = "tcp-forwarder"

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self.target = target
        self.connections = 0
        super().__init__(host)

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        upstream = socket.create_connection(self.target, timeout=IO_TIMEOUT)
        with upstream:
            self._track(upstream)
            try:
                _pipe_both_ways(conn, upstream, self._record_error)
            finally:
                self._untrack(upstream)


class RecordingForwarder(TCPForwarder):
    """A `TCPForwarder` that keeps every raw byte the client sent (``received``): what an
    interceptor on the path sees, TLS records and anything sent in cleartext alike."""

    name = "recording-forwarder"

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self._received = bytearray()
        super().__init__(target, host=host)

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        upstream = socket.create_connection(self.target, timeout=IO_TIMEOUT)
        with upstream:
            self._track(upstream)
            try:
                _pipe_both_ways(conn, upstream, self._record_error, tap=self._record)
            finally:
                self._untrack(upstream)

    def _record(self, data: bytes) -> None:
        with self._lock:
            self._received += data


def _pump(src: socket.socket, dst: socket.socket, on_error: Any, tap: Any = None) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if tap is not None:
                tap(data)
            dst.sendall(data)
    except (OSError, ValueError) as exc:
        on_error(exc)
        _hard_shutdown(src)
        _hard_shutdown(dst)
        return
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _pipe_both_ways(a: socket.socket, b: socket.socket, on_error: Any, tap: Any = None) -> None:
    """Copy bytes a->b (in a helper thread) and b->a (here) until both directions hit EOF.
    ``tap(data)``, if given, sees every chunk going a->b."""
    helper = threading.Thread(target=_pump, args=(a, b, on_error, tap), name="pipe", daemon=True)
    helper.start()
    try:
        _pump(b, a, on_error)
    finally:
        helper.join(IO_TIMEOUT)
        if helper.is_alive():
            _hard_shutdown(a)
            _hard_shutdown(b)
            helper.join(JOIN_TIMEOUT)


class ConnectProxy(_ThreadedServer):
    """Plain-TCP HTTP ``CONNECT`` proxy on loopback.

    Every requested host is resolved to ``upstream_host`` (127.0.0.1), so a client can
    ``CONNECT pinned.test:PORT`` and reach the loopback server on PORT. ``requests`` records
    the ``host:port`` targets in order; ``request_headers`` the raw header blocks. With
    ``auth=(user, password)`` the proxy demands Basic ``Proxy-Authorization`` (407 otherwise).
    """

    name = "connect-proxy"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        upstream_host: str = "127.0.0.1",
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.upstream_host = upstream_host
        self.auth = auth
        self.requests: list[str] = []
        self.request_headers: list[bytes] = []
        super().__init__(host)

    @property
    def url(self) -> str:
        return f"http://{_format_host(self.host)}:{self.port}"

    def _handle(self, conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
            if len(buf) > 65536:
                conn.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                return
        head, _, rest = buf.partition(b"\r\n\r\n")
        request_line, *header_lines = head.split(b"\r\n")
        parts = request_line.split()
        if len(parts) != 3 or parts[0].upper() != b"CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        target = parts[1].decode("ascii", "replace")
        with self._lock:
            self.requests.append(target)
            self.request_headers.append(head)
        if self.auth is not None and not self._authorized(header_lines):
            conn.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="certpin"\r\nContent-Length: 0\r\n\r\n'
            )
            return
        _host, sep, port_text = target.rpartition(":")
        try:
            if not sep:
                raise ValueError(target)
            port = int(port_text)
            upstream = socket.create_connection((self.upstream_host, port), timeout=IO_TIMEOUT)
        except (OSError, ValueError) as exc:
            self._record_error(exc)
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            self._track(upstream)
            try:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                _pipe_both_ways(conn, upstream, self._record_error)
            finally:
                self._untrack(upstream)

    def _authorized(self, header_lines: list[bytes]) -> bool:
        assert self.auth is not None
        expected = b"Basic " + base64.b64encode(":".join(self.auth).encode())
        for line in header_lines:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"proxy-authorization" and value.strip() == expected:
                return True
        return False


class WebSocketTLSServer:
    """``wss://`` echo server on loopback (websockets' sync server in a thread).

    ``received`` lists every message received (str or bytes); ``handshakes`` counts
    connections that completed the TLS and WebSocket handshakes and reached the handler.
    """

    def __init__(
        self,
        certfile: Path | str,
        keyfile: Path | str,
        *,
        host: str = "127.0.0.1",
        logger: logging.Logger | None = None,
    ) -> None:
        import pytest

        pytest.importorskip("websockets", reason="the wss:// server needs websockets")
        from websockets.sync.server import serve

        self.host = host
        self.received: list[str | bytes] = []
        self.handshakes = 0
        self._lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.fspath(certfile), os.fspath(keyfile))
        # No TLS 1.3 session tickets. websockets' sync client reads its SSLSocket on a background
        # thread while the main thread writes the upgrade request; when the read thread is
        # processing the server's NewSessionTicket at that moment, the request can stall until
        # open_timeout (two threads on one OpenSSL SSL object). Reproduced
        # without certpin (plain ssl contexts, about 1 connection in 1 500 under CPU load);
        # see docs/enforcement.md. These tests are about pins, not that race.
        ctx.num_tickets = 0
        if logger is None:
            # websockets logs aborted handshakes at ERROR; keep pinning-failure tests quiet.
            logger = logging.getLogger(f"tests.wss.{id(self):x}")
            logger.addHandler(logging.NullHandler())
            logger.propagate = False
        self._server = serve(self._echo, host, 0, ssl=ctx, logger=logger)
        self.port: int = self._server.socket.getsockname()[1]
        self._thread: threading.Thread | None = None

    def _echo(self, websocket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            self.handshakes += 1
        try:
            for message in websocket:
                with self._lock:
                    self.received.append(message)
                websocket.send(message)
        except ConnectionClosed:
            pass

    def url(self, hostname: str = "localhost", path: str = "/") -> str:
        return f"wss://{_format_host(hostname)}:{self.port}{path}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="wss-server", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)
        else:
            self._server.socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
