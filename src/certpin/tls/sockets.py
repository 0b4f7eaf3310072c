"""The socket classes of a pinning context: they run its pin check after every handshake.

A `certpin.tls.context.PinningContext` hands out `_PinningSSLSocket` (blocking sockets) and
`_PinningSSLObject` (memory BIOs: asyncio and the clients built on it). Their
``do_handshake()`` asks the context for its verdict (``context._certpin_enforce``) as soon as
OpenSSL has verified the chain and the host name, before the caller can write a single
application byte; a failed handshake or pin check leaves the connection dead (shut down, every
later I/O refused), and a chain OpenSSL refused is passed to the context's
``_certpin_untrusted`` (reported when the host is pinned). This module also reads a
connection's chains (`verified_chain`, `served_chain`) and remembers the chain each TLS session
was verified with (`Sessions`), since a resumed session carries none.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from collections import OrderedDict
from typing import Any

from certpin._errors import PinValidationError

__all__ = ["Sessions", "served_chain", "verified_chain"]

_DER = 2  # _ssl.ENCODING_DER; 1 (PEM) would return str
_SESSION_CACHE_SIZE = 1024


if sys.version_info >= (3, 13):

    def verified_chain(conn: ssl.SSLSocket | ssl.SSLObject) -> tuple[bytes, ...]:
        """The chain OpenSSL verified for this connection, DER, leaf first (may be empty)."""
        return tuple(conn.get_verified_chain())

    def served_chain(conn: ssl.SSLSocket | ssl.SSLObject) -> tuple[bytes, ...]:
        """The chain the peer sent, DER, leaf first. For reports only, never for decisions."""
        return tuple(conn.get_unverified_chain())

else:  # 3.11/3.12: only the private _sslobj API exists, returning _ssl.Certificate or None.

    def verified_chain(conn: ssl.SSLSocket | ssl.SSLObject) -> tuple[bytes, ...]:
        """The chain OpenSSL verified for this connection, DER, leaf first (may be empty)."""
        raw = conn._sslobj  # type: ignore[union-attr]
        if raw is None:
            return ()
        return tuple(c.public_bytes(_DER) for c in raw.get_verified_chain() or ())

    def served_chain(conn: ssl.SSLSocket | ssl.SSLObject) -> tuple[bytes, ...]:
        """The chain the peer sent, DER, leaf first. For reports only, never for decisions."""
        raw = conn._sslobj  # type: ignore[union-attr]
        if raw is None:
            return ()
        return tuple(c.public_bytes(_DER) for c in raw.get_unverified_chain() or ())


# The plain descriptors, so the overriding properties below can delegate without recursion.
_SOCKET_SESSION: Any = ssl.SSLSocket.session
_OBJECT_SESSION: Any = ssl.SSLObject.session


_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _dead(conn: ssl.SSLSocket | ssl.SSLObject) -> PinValidationError:
    return PinValidationError(
        f"refusing I/O on a TLS connection to {conn.server_hostname!r}: its handshake or pin "
        f"check failed ({conn._certpin_failed}) and it was shut down; open a new connection"  # type: ignore[union-attr]
    )


class _PinningSSLSocket(ssl.SSLSocket):
    # Set by the hook once the verdict allowed the connection. I/O before that first runs the
    # handshake (and so the pin check): with do_handshake_on_connect=False, OpenSSL would
    # otherwise complete the handshake implicitly inside send()/recv() and skip the hook.
    _certpin_checked = False
    # The reason, once the handshake or the pin check failed: the socket is dead from then on.
    # CPython's SSLSocket._real_connect (ctx.wrap_socket(socket.socket()); connect()) catches a
    # handshake error, sets _sslobj = None and re-raises, leaving a connected TCP socket whose
    # send() then writes in *cleartext* to whoever is on the path. So a failure shuts the TCP
    # connection down (OkHttp closes the socket) and every later I/O method raises.
    _certpin_failed: str | None = None

    def do_handshake(self, block: bool = False) -> None:
        if self._certpin_failed is not None:
            raise _dead(self)
        try:
            super().do_handshake(block)
            _check(self)
        except _WANT:
            raise  # a non-blocking handshake in progress, not a failure
        except BaseException as exc:
            _untrusted(self, exc)
            self._certpin_kill(exc)
            raise

    def _certpin_kill(self, exc: BaseException) -> None:
        self._certpin_failed = f"{type(exc).__name__}: {exc}"
        # SHUT_RDWR at the OS level also stops the paths that bypass Python's methods
        # (os.write on fileno(), sendfile's os.sendfile, socket.socket.send(sock, ...)).
        try:
            socket.socket.shutdown(self, socket.SHUT_RDWR)
        except OSError:
            pass  # not connected (yet) or already reset: nothing can be sent either way

    def _certpin_ensure_checked(self) -> None:
        if self._certpin_failed is not None:
            raise _dead(self)
        if not self._certpin_checked and getattr(self, "_sslobj", None) is not None:
            self.do_handshake()

    def connect(self, addr: Any) -> None:
        if self._certpin_failed is not None:
            raise _dead(self)
        super().connect(addr)

    def connect_ex(self, addr: Any) -> int:
        if self._certpin_failed is not None:
            raise _dead(self)
        return super().connect_ex(addr)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        self._certpin_ensure_checked()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        self._certpin_ensure_checked()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        self._certpin_ensure_checked()
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._certpin_ensure_checked()
        super().sendall(data, flags)

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:
        self._certpin_ensure_checked()
        if addr is None:
            return super().sendto(data, flags_or_addr)
        return super().sendto(data, flags_or_addr, addr)

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        self._certpin_ensure_checked()
        return super().sendmsg(*args, **kwargs)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        self._certpin_ensure_checked()
        return super().sendfile(file, offset, count)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._certpin_ensure_checked()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self._certpin_ensure_checked()
        return super().recv_into(buffer, nbytes, flags)

    def recvfrom(self, buflen: int = 1024, flags: int = 0) -> tuple[bytes, Any]:
        self._certpin_ensure_checked()
        return super().recvfrom(buflen, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> Any:
        self._certpin_ensure_checked()
        return super().recvfrom_into(buffer, nbytes, flags)

    def recvmsg(self, *args: Any, **kwargs: Any) -> Any:
        self._certpin_ensure_checked()
        return super().recvmsg(*args, **kwargs)

    def recvmsg_into(self, *args: Any, **kwargs: Any) -> Any:
        self._certpin_ensure_checked()
        return super().recvmsg_into(*args, **kwargs)

    @property
    def session(self) -> ssl.SSLSession | None:
        sess: ssl.SSLSession | None = _SOCKET_SESSION.__get__(self)
        _remember(self, sess)
        return sess

    @session.setter
    def session(self, value: ssl.SSLSession | None) -> None:
        _SOCKET_SESSION.__set__(self, value)


class _PinningSSLObject(ssl.SSLObject):
    _certpin_checked = False  # see _PinningSSLSocket
    _certpin_failed: str | None = None  # see _PinningSSLSocket: a failed object stays dead

    def do_handshake(self) -> None:
        if self._certpin_failed is not None:
            raise _dead(self)
        try:
            super().do_handshake()
            _check(self)
        except _WANT:
            raise
        except BaseException as exc:
            _untrusted(self, exc)
            self._certpin_failed = f"{type(exc).__name__}: {exc}"
            raise

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if not self._certpin_checked or self._certpin_failed is not None:
            self.do_handshake()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        if not self._certpin_checked or self._certpin_failed is not None:
            self.do_handshake()
        return super().write(data)

    @property
    def session(self) -> ssl.SSLSession | None:
        sess: ssl.SSLSession | None = _OBJECT_SESSION.__get__(self)
        _remember(self, sess)
        return sess

    @session.setter
    def session(self, value: ssl.SSLSession | None) -> None:
        _OBJECT_SESSION.__set__(self, value)


class Sessions:
    """The chains verified when TLS sessions were established, by session id (bounded LRU).

    A resumed session carries no chain (both chain APIs return empty): the pin check re-uses
    the chain verified when the session was made, or fails closed. Each entry is bound to the
    host it was verified for: OpenSSL does not re-check the host name on resumption, so a
    session offered to another host must not borrow the chain.
    """

    def __init__(self, size: int = _SESSION_CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._chains: OrderedDict[bytes, tuple[str, tuple[bytes, ...]]] = OrderedDict()

    def remember(self, sess: ssl.SSLSession, host: str, chain: tuple[bytes, ...]) -> None:
        with self._lock:
            self._chains[sess.id] = (host, chain)
            self._chains.move_to_end(sess.id)
            while len(self._chains) > self._size:
                self._chains.popitem(last=False)

    def recall(self, conn: ssl.SSLSocket | ssl.SSLObject) -> tuple[bytes, ...]:
        """The chain verified for `conn`'s session and host, or () (fail closed)."""
        getter = _SOCKET_SESSION if isinstance(conn, ssl.SSLSocket) else _OBJECT_SESSION
        sess: ssl.SSLSession | None = getter.__get__(conn)
        if sess is None:
            return ()
        with self._lock:
            host, chain = self._chains.get(sess.id, ("", ()))
        return chain if host and host == conn.server_hostname else ()

    def clear(self) -> None:
        with self._lock:
            self._chains.clear()


def _check(conn: ssl.SSLSocket | ssl.SSLObject) -> None:
    """Run the pin check of the connection's context; fail closed on any other context."""
    enforce = getattr(conn.context, "_certpin_enforce", None)
    if enforce is None:  # Defensive: a foreign context reused certpin's socket classes
        raise PinValidationError("certpin socket class used without a certpin PinningContext")
    enforce(conn)


def _untrusted(conn: ssl.SSLSocket | ssl.SSLObject, exc: BaseException) -> None:
    """Tell the context that OpenSSL refused the chain (a CA or host-name failure, not certpin's
    own refusal), so a failure on a pinned host is reported like a pin failure."""
    if isinstance(exc, ssl.SSLCertVerificationError) and not isinstance(exc, PinValidationError):
        report = getattr(conn.context, "_certpin_untrusted", None)
        if report is not None:
            report(conn, exc)


def _remember(conn: ssl.SSLSocket | ssl.SSLObject, sess: ssl.SSLSession | None) -> None:
    verified = getattr(conn, "_certpin_verified", None)
    sessions = getattr(conn.context, "_certpin_sessions", None)
    if sess is None or not verified or not isinstance(sessions, Sessions):
        return
    sessions.remember(sess, conn.server_hostname or "", verified)
