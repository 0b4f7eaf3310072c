"""After a failed handshake or pin check, a socket never carries another byte.

CPython's ``SSLSocket._real_connect`` (the ``ctx.wrap_socket(socket.socket()); connect()`` pattern
of the Python docs) catches the handshake error, sets ``_sslobj = None`` and re-raises: the TCP
connection stays open and the socket's ``send``/``sendall`` then write to it *in cleartext*. An
application that catches the error and carries on (or retries on the same object) would hand its
request to the interceptor. certpin shuts a failed socket down and refuses every later I/O
(OkHttp closes the socket). Every test records the raw bytes on the path: an interceptor must see
TLS records only, never the request.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

import certpin
from _support.pki import PKIFiles
from _support.servers import RecordingForwarder, TLSServer, _pipe_both_ways, wait_for
from tls._fixtures import Pins, policy_for

SECRET = b"GET /secret?token=hunter2 HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _ctx(files: PKIFiles, *pins: str) -> certpin.PinningContext:
    return certpin.create_default_context(policy_for("localhost", *pins), cafile=files.root_ca)


@pytest.fixture
def tap(server: TLSServer) -> Iterator[RecordingForwarder]:
    with RecordingForwarder(server.address) as fwd:
        yield fwd


@pytest.fixture
def rogue_tap(rogue_server: TLSServer) -> Iterator[RecordingForwarder]:
    with RecordingForwarder(rogue_server.address) as fwd:
        yield fwd


def _sendfile(sock: ssl.SSLSocket) -> None:
    with tempfile.TemporaryFile() as f:
        f.write(SECRET)
        f.seek(0)
        sock.sendfile(f)


def _makefile(sock: ssl.SSLSocket) -> None:
    with sock.makefile("wb") as f:
        f.write(SECRET)
        f.flush()


def _os_write(sock: ssl.SSLSocket) -> None:
    os.write(sock.fileno(), SECRET)


# Every way an application can write to a socket object after connect() raised.
WRITERS: dict[str, Callable[[ssl.SSLSocket], object]] = {
    "sendall": lambda s: s.sendall(SECRET),
    "send": lambda s: s.send(SECRET),
    "write": lambda s: s.write(SECRET),
    "sendmsg": lambda s: s.sendmsg([SECRET]),
    "sendto": lambda s: s.sendto(SECRET, ("127.0.0.1", 9)),
    "sendfile": _sendfile,
    "makefile": _makefile,
    "os.write(fileno)": _os_write,
    "plain socket.send": lambda s: socket.socket.send(s, SECRET),
}
READERS: dict[str, Callable[[ssl.SSLSocket], object]] = {
    "recv": lambda s: s.recv(10),
    "recv_into": lambda s: s.recv_into(bytearray(10)),
    "read": lambda s: s.read(10),
    "recvfrom": lambda s: s.recvfrom(10),
    "recvmsg": lambda s: s.recvmsg(10),
}


def _failed_connect(ctx: ssl.SSLContext, address: tuple[str, int]) -> ssl.SSLSocket:
    sock = ctx.wrap_socket(socket.socket(), server_hostname="localhost")
    sock.settimeout(5)
    with pytest.raises(ssl.SSLCertVerificationError):
        sock.connect(address)
    return sock


def _assert_nothing_in_clear(fwd: RecordingForwarder) -> None:
    # The interceptor saw the ClientHello (and maybe an alert), never the request.
    assert wait_for(lambda: fwd.connections >= 1)
    assert SECRET not in fwd.received
    assert b"hunter2" not in fwd.received


@pytest.mark.parametrize("writer", WRITERS, ids=str)
def test_no_cleartext_after_pin_failure_in_connect(
    tap: RecordingForwarder, server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, writer: str
) -> None:
    sock = _failed_connect(_ctx(tmp_pki_files, pins.other, pins.spare), tap.address)
    with sock, contextlib.suppress(OSError, ValueError):  # any refusal is fine; bytes are not
        WRITERS[writer](sock)
    assert server.wait_idle()
    assert tap.wait_idle()
    _assert_nothing_in_clear(tap)
    assert server.total_received() == b""


@pytest.mark.parametrize("writer", ["sendall", "send", "write", "sendmsg", "sendfile", "makefile"])
def test_every_later_write_raises_pin_validation_error(
    tap: RecordingForwarder, tmp_pki_files: PKIFiles, pins: Pins, writer: str
) -> None:
    sock = _failed_connect(_ctx(tmp_pki_files, pins.other, pins.spare), tap.address)
    with sock, pytest.raises(certpin.PinValidationError, match="failed"):
        WRITERS[writer](sock)


@pytest.mark.parametrize("reader", READERS, ids=str)
def test_every_later_read_raises(
    tap: RecordingForwarder, tmp_pki_files: PKIFiles, pins: Pins, reader: str
) -> None:
    sock = _failed_connect(_ctx(tmp_pki_files, pins.other, pins.spare), tap.address)
    with sock, pytest.raises(certpin.PinValidationError):
        READERS[reader](sock)


def test_retrying_connect_on_the_failed_socket_is_refused(
    tap: RecordingForwarder, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    sock = _failed_connect(_ctx(tmp_pki_files, pins.other, pins.spare), tap.address)
    with sock, contextlib.suppress(OSError):
        sock.connect(tap.address)
        sock.sendall(SECRET)
    assert tap.wait_idle()
    _assert_nothing_in_clear(tap)


def test_connect_ex_pin_failure_leaves_no_cleartext_path(
    tap: RecordingForwarder, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    sock = _ctx(tmp_pki_files, pins.other, pins.spare).wrap_socket(
        socket.socket(), server_hostname="localhost"
    )
    with sock:
        with pytest.raises(certpin.PinValidationError):
            sock.connect_ex(tap.address)
        with pytest.raises(certpin.PinValidationError):
            sock.sendall(SECRET)
    assert tap.wait_idle()
    _assert_nothing_in_clear(tap)


def test_no_cleartext_after_ca_failure_in_connect(
    rogue_tap: RecordingForwarder, rogue_server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # A rogue CA (not trusted) fails OpenSSL's verification before the pin check: the same
    # cleartext trap, the same guarantee.
    sock = _failed_connect(_ctx(tmp_pki_files, pins.intermediate, pins.spare), rogue_tap.address)
    with sock:
        for name, write in WRITERS.items():
            with contextlib.suppress(OSError, ValueError):
                write(sock)
                pytest.fail(f"{name} after a failed handshake did not raise")
    assert rogue_tap.wait_idle()
    _assert_nothing_in_clear(rogue_tap)
    assert rogue_server.total_received() == b""


def test_pin_failure_with_explicit_handshake_then_write_is_refused(
    tap: RecordingForwarder, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    raw = socket.create_connection(tap.address, timeout=5)
    ctx = _ctx(tmp_pki_files, pins.other, pins.spare)
    with ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls:
        with pytest.raises(certpin.PinValidationError):
            tls.do_handshake()
        with pytest.raises(certpin.PinValidationError):
            tls.sendall(SECRET)
        with pytest.raises(certpin.PinValidationError):
            tls.do_handshake()  # a second attempt does not resurrect it
    assert tap.wait_idle()
    _assert_nothing_in_clear(tap)


def test_memory_bio_object_is_dead_after_a_pin_failure(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    ctx = _ctx(tmp_pki_files, pins.other, pins.spare)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(server.address, timeout=5) as raw:
        with pytest.raises(certpin.PinValidationError):
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    data = raw.recv(65536)
                    if not data:
                        incoming.write_eof()
                    incoming.write(data)
        with pytest.raises(certpin.PinValidationError):
            obj.write(SECRET)
        with pytest.raises(certpin.PinValidationError):
            obj.read(10)
        assert outgoing.read().find(SECRET) == -1
    assert server.wait_idle()
    assert server.total_received() == b""


# -- the twins: a good pin set leaves every path working --------------------------------------


def test_connect_with_good_pins_then_sendall_works(
    tap: RecordingForwarder, server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    ctx = _ctx(tmp_pki_files, pins.intermediate, pins.spare)
    with ctx.wrap_socket(socket.socket(), server_hostname="localhost") as sock:
        sock.settimeout(5)
        sock.connect(tap.address)
        sock.sendall(SECRET)
        assert b"200 OK" in sock.recv(4096)
    assert tap.wait_idle()
    assert SECRET not in tap.received  # encrypted on the wire
    assert server.wait_idle()
    assert SECRET in server.total_received()


@pytest.mark.parametrize("writer", ["sendall", "send", "write", "sendfile", "makefile"])
def test_good_pins_every_writer_delivers(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, writer: str
) -> None:
    ctx = _ctx(tmp_pki_files, pins.intermediate, pins.spare)
    with ctx.wrap_socket(socket.socket(), server_hostname="localhost") as sock:
        sock.settimeout(5)
        sock.connect(server.address)
        WRITERS[writer](sock)
        assert b"200 OK" in sock.recv(4096)
    assert server.wait_idle()
    assert SECRET in server.total_received()


def test_non_blocking_handshake_is_not_poisoned_by_want_read(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # SSLWantReadError is the normal flow of a non-blocking handshake, not a failure. The
    # listener below answers nothing until the client has seen one, so the case is certain.
    ctx = _ctx(tmp_pki_files, pins.intermediate, pins.spare)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        tls = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
        with tls:
            tls.setblocking(False)
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            conn, _ = listener.accept()
            upstream = socket.create_connection(server.address, timeout=5)
            pipe = threading.Thread(
                target=_pipe_both_ways, args=(conn, upstream, lambda exc: None), daemon=True
            )
            pipe.start()
            while True:
                try:
                    tls.do_handshake()
                    break
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    select.select([tls], [], [], 5)
            tls.setblocking(True)
            tls.settimeout(5)
            tls.sendall(SECRET)
            assert b"200 OK" in tls.recv(4096)
        pipe.join(10)
        conn.close()
        upstream.close()
