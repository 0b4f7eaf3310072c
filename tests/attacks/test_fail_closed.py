"""Fail-closed edges of the hook that no HTTP client exercises by default."""

from __future__ import annotations

import socket
import ssl

import pytest

import certpin
from _support.pki import PKIFiles
from _support.servers import TLSServer
from tls._fixtures import Pins, policy_for

REQUEST = b"GET /secret?token=abc HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _ctx(files: PKIFiles, *pins: str) -> certpin.PinningContext:
    return certpin.create_default_context(policy_for("localhost", *pins), cafile=files.root_ca)


def test_implicit_handshake_in_sendall_still_checks_pins(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # do_handshake_on_connect=False lets OpenSSL finish the handshake inside send(): the pin
    # check must still run before the first application byte.
    ctx = _ctx(tmp_pki_files, pins.other, pins.spare)
    raw = socket.create_connection(server.address, timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls:
        with pytest.raises(certpin.PinValidationError):
            tls.sendall(REQUEST)
    assert server.wait_idle()
    assert server.total_received() == b""


@pytest.mark.parametrize("first_io", ["recv", "write", "read", "send", "recv_into"])
def test_implicit_handshake_twins_pass_with_good_pins(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, first_io: str
) -> None:
    ctx = _ctx(tmp_pki_files, pins.intermediate, pins.spare)
    raw = socket.create_connection(server.address, timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls:
        if first_io in ("recv", "read", "recv_into"):
            # reading first: the server waits for a request, so send it on a short timeout
            tls.settimeout(0.5)
            with pytest.raises((TimeoutError, ssl.SSLError)):
                if first_io == "recv_into":
                    tls.recv_into(bytearray(10))
                else:
                    getattr(tls, first_io)(10)
            tls.settimeout(10)
            tls.sendall(REQUEST)
        else:
            getattr(tls, first_io)(REQUEST)
        assert tls.certpin_verdict.status is certpin.VerdictStatus.OK  # type: ignore[attr-defined]
        assert b"200 OK" in tls.recv(4096)


@pytest.mark.parametrize("bad_first_io", ["recv", "send"])
def test_implicit_handshake_blocks_on_any_first_io(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, bad_first_io: str
) -> None:
    ctx = _ctx(tmp_pki_files, pins.other, pins.spare)
    raw = socket.create_connection(server.address, timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls:
        with pytest.raises(certpin.PinValidationError):
            if bad_first_io == "recv":
                tls.recv(10)
            else:
                tls.send(REQUEST)
    assert server.wait_idle()
    assert server.total_received() == b""


def test_memory_bio_write_before_handshake_checks_pins(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    """SSLObject.write() before do_handshake(): the handshake (and the check) runs first."""
    ctx = _ctx(tmp_pki_files, pins.other, pins.spare)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = socket.create_connection(server.address, timeout=10)
    with sock:
        for _ in range(50):
            try:
                obj.write(REQUEST)
                pytest.fail("write() succeeded before the pin check")
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    break
                incoming.write(data)
            except certpin.PinValidationError:
                break
        else:
            pytest.fail("handshake never completed")
        assert obj.certpin_verdict.status is certpin.VerdictStatus.FAILED  # type: ignore[attr-defined]
    assert server.wait_idle()
    assert server.total_received() == b""


def test_socket_classes_cannot_be_swapped(tmp_pki_files: PKIFiles, pins: Pins) -> None:
    ctx = _ctx(tmp_pki_files, pins.intermediate, pins.spare)
    with pytest.raises(certpin.InsecureContextError):
        ctx.sslsocket_class = ssl.SSLSocket
    with pytest.raises(certpin.InsecureContextError):
        ctx.sslobject_class = ssl.SSLObject
    hook_class = ctx.sslsocket_class
    assert hook_class.__name__ == "_PinningSSLSocket"

    class Extended(hook_class):  # type: ignore[valid-type,misc]
        pass

    ctx.sslsocket_class = Extended  # a subclass keeps the check, and is honoured
    assert ctx.sslsocket_class is Extended


def test_resumed_session_is_bound_to_its_host(tmp_pki_files: PKIFiles, pins: Pins) -> None:
    """OpenSSL does not re-check the host name on resumption: a session verified for one
    name must not lend its chain to a connection for another name."""
    tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile, tls_versions=tls12) as srv:
        policy = certpin.Policy.from_dict(
            {
                "domains": {
                    "localhost": {"pins": [pins.intermediate, pins.spare]},
                    "127.0.0.1": {"pins": [pins.intermediate, pins.spare]},
                }
            }
        )
        ctx = certpin.create_default_context(policy, cafile=tmp_pki_files.root_ca)

        def get(name: str, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
            raw = socket.create_connection(srv.address, timeout=10)
            with ctx.wrap_socket(raw, server_hostname=name, session=session) as tls:
                tls.sendall(REQUEST)
                while tls.recv(65536):
                    pass
                return tls.session, tls.session_reused

        session, _ = get("localhost", None)
        _, reused = get("localhost", session)
        assert reused  # same host: the remembered chain is re-checked and passes
        try:
            _, reused = get("127.0.0.1", session)
        except certpin.PinValidationError as exc:
            assert exc.verdict is not None and exc.verdict.chain == ()
        else:
            assert not reused, "a session for localhost was resumed for 127.0.0.1 unchecked"
