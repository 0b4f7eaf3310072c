"""The pinning context refuses to run without certificate and host name verification, also when
a client library tries to switch them off."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
import urllib3

import certpin
from _support.pki import PKIFiles
from _support.servers import TLSServer
from tls._fixtures import Pins, policy_for


@pytest.fixture
def ctx(tmp_pki_files: PKIFiles, pins: Pins) -> certpin.PinningContext:
    return certpin.create_default_context(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )


def test_defaults(ctx: certpin.PinningContext) -> None:
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert not ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("mode", [ssl.CERT_NONE, ssl.CERT_OPTIONAL])
def test_verify_mode_refused(ctx: certpin.PinningContext, mode: ssl.VerifyMode) -> None:
    with pytest.raises(certpin.InsecureContextError, match="CERT_REQUIRED"):
        ctx.verify_mode = mode
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_check_hostname_refused(ctx: certpin.PinningContext) -> None:
    with pytest.raises(certpin.InsecureContextError, match="check_hostname"):
        ctx.check_hostname = False
    assert ctx.check_hostname is True


def test_setting_the_secure_values_is_allowed(ctx: certpin.PinningContext) -> None:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True


def test_urllib3_cert_none_is_refused(ctx: certpin.PinningContext, server: TLSServer) -> None:
    # urllib3 sets verify_mode from cert_reqs on the context it is given: CERT_NONE raises.
    with urllib3.PoolManager(ssl_context=ctx, cert_reqs="CERT_NONE", retries=False) as pm:
        with pytest.raises(certpin.InsecureContextError):
            pm.request("GET", server.url())
    assert server.wait_idle() and server.total_received() == b""


def test_urllib3_assert_hostname_false_is_refused(
    ctx: certpin.PinningContext, server: TLSServer
) -> None:
    # assert_hostname=False makes urllib3 set check_hostname = False on the context: refused.
    with urllib3.PoolManager(ssl_context=ctx, assert_hostname=False, retries=False) as pm:
        with pytest.raises(certpin.InsecureContextError):
            pm.request("GET", server.url())
    assert server.wait_idle() and server.total_received() == b""


def test_urllib3_assert_fingerprint_is_refused(
    ctx: certpin.PinningContext, server: TLSServer
) -> None:
    # urllib3 turns off hostname checks to compare a leaf fingerprint itself: refused.
    with urllib3.PoolManager(ssl_context=ctx, assert_fingerprint="00" * 32, retries=False) as pm:
        with pytest.raises(certpin.InsecureContextError):
            pm.request("GET", server.url())


def test_httpx_client_keeps_the_context_strict(
    ctx: certpin.PinningContext, server: TLSServer
) -> None:
    # httpx uses a given SSLContext as-is. (verify=False builds httpx's own context, not ours:
    # nothing certpin can or should check there.)
    with httpx.Client(verify=ctx) as client:
        assert client.get(server.url()).status_code == 200
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_sockets_refuse_a_context_made_insecure_behind_our_back(
    ctx: certpin.PinningContext, server: TLSServer
) -> None:
    # Even if the C-level attribute is flipped directly, the hook re-checks at handshake time.
    ssl_ctx_type = ssl.SSLContext.__mro__[-2]  # _ssl._SSLContext
    ssl_ctx_type.check_hostname.__set__(ctx, False)

    with socket.create_connection(server.address) as raw:
        with pytest.raises(certpin.PinValidationError, match="not verifying"):
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert server.wait_idle() and server.total_received() == b""


@pytest.mark.parametrize("which", ["sslsocket_class", "sslobject_class"])
def test_certpin_socket_classes_fail_closed_on_a_foreign_context(
    ctx: certpin.PinningContext, server: TLSServer, tmp_pki_files: PKIFiles, which: str
) -> None:
    # A plain context that borrows certpin's socket classes has no pin check to run: refused,
    # never a silently unpinned connection.
    foreign = ssl.create_default_context(cafile=str(tmp_pki_files.root_ca))
    setattr(foreign, which, getattr(ctx, which))
    with socket.create_connection(server.address) as raw:
        with pytest.raises(certpin.PinValidationError, match="without a certpin PinningContext"):
            if which == "sslsocket_class":
                foreign.wrap_socket(raw, server_hostname="localhost")
            else:
                _bio_handshake(foreign, raw)
    assert server.wait_idle() and server.total_received() == b""
    # Twin: the same classes on their own context run the check (and allow this connection).
    with socket.create_connection(server.address) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.certpin_verdict.allowed  # type: ignore[attr-defined]
    with socket.create_connection(server.address) as raw:
        assert _bio_handshake(ctx, raw).certpin_verdict.allowed  # type: ignore[attr-defined]


def _bio_handshake(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLObject:
    """A memory-BIO handshake (what asyncio does) over a connected socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection") from None
            incoming.write(data)
        else:
            sock.sendall(outgoing.read())
            return tls
