"""Self-tests of the test infrastructure in tests/_support, using only the stdlib ``ssl``.

If these fail, certpin's own test results mean nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from _support.pki import (
    KEY_TYPES,
    PKI,
    KeyType,
    PKIFiles,
    cert_sha256,
    make_key,
    make_pki,
    new_root,
    spki_pin,
    write_pki_files,
)
from _support.servers import (
    DEFAULT_BODY,
    ConnectProxy,
    TCPForwarder,
    TLSServer,
    WebSocketTLSServer,
)


def client_context(*roots: Path | bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for root in roots:
        if isinstance(root, bytes):
            ctx.load_verify_locations(cadata=root.decode())
        else:
            ctx.load_verify_locations(cafile=str(root))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def https_get(
    ctx: ssl.SSLContext,
    port: int,
    hostname: str = "localhost",
    path: str = "/",
    *,
    connect_host: str = "127.0.0.1",
) -> tuple[int, bytes, bytes]:
    """GET over a fresh connection; returns (status, body, peer leaf DER)."""
    conn = http.client.HTTPSConnection(hostname, port, context=ctx, timeout=10)
    # Dial connect_host but verify/SNI as hostname: avoids localhost -> ::1 surprises.
    conn.sock = ctx.wrap_socket(
        socket.create_connection((connect_host, port), timeout=10), server_hostname=hostname
    )
    try:
        peer = conn.sock.getpeercert(binary_form=True)
        assert peer is not None
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), peer
    finally:
        conn.close()


def tls_connect_fails(ctx: ssl.SSLContext, port: int, hostname: str = "localhost") -> str:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname=hostname).close()
    return str(info.value.verify_message)


# -- TLSServer + PKI --------------------------------------------------------------------------


def test_default_context_connects_and_server_records_request(
    server: TLSServer, tmp_pki_files: PKIFiles, pki: PKI
) -> None:
    status, body, peer = https_get(client_context(tmp_pki_files.root_ca), server.port)
    assert (status, body) == (200, DEFAULT_BODY)
    assert peer == pki.leaf.der()
    assert server.wait_idle()
    assert server.handshakes == 1
    assert len(server.received) == 1
    assert server.received[0].startswith(b"GET / HTTP/1.1\r\n")
    assert b"Host: localhost:" in server.received[0]
    assert server.server_names == ["localhost"]
    assert server.negotiated[0]["alpn"] is None  # http.client offers no ALPN
    assert server.url("/x") == f"https://localhost:{server.port}/x"


def test_stdlib_http_client_via_localhost_name(server: TLSServer, tmp_pki_files: PKIFiles) -> None:
    conn = http.client.HTTPSConnection(
        "localhost", server.port, context=client_context(tmp_pki_files.root_ca), timeout=10
    )
    try:
        conn.request("GET", "/plain")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, DEFAULT_BODY)
    except ConnectionRefusedError:  # pragma: no cover - localhost resolves only to ::1 here
        pytest.skip("localhost does not resolve to 127.0.0.1")
    finally:
        conn.close()


def test_ip_address_san(server: TLSServer, tmp_pki_files: PKIFiles) -> None:
    status, body, _ = https_get(client_context(tmp_pki_files.root_ca), server.port, "127.0.0.1")
    assert (status, body) == (200, DEFAULT_BODY)


def test_untrusted_root_fails_and_server_gets_no_bytes(
    server: TLSServer, rogue_pki_files: PKIFiles
) -> None:
    message = tls_connect_fails(client_context(rogue_pki_files.root_ca), server.port)
    assert "unable to get local issuer certificate" in message
    assert server.wait_idle()
    assert server.handshakes == 0
    assert server.received == []
    assert server.total_received() == b""
    assert server.errors  # the aborted handshake was recorded, not raised


def test_rogue_server_is_rejected_by_real_root(
    rogue_server: TLSServer, tmp_pki_files: PKIFiles
) -> None:
    tls_connect_fails(client_context(tmp_pki_files.root_ca), rogue_server.port)
    assert rogue_server.wait_idle()
    assert rogue_server.total_received() == b""


def test_hostname_mismatch(server: TLSServer, tmp_pki_files: PKIFiles) -> None:
    message = tls_connect_fails(client_context(tmp_pki_files.root_ca), server.port, "other.test")
    assert "match" in message.lower()


def test_served_chain_excludes_root(pki: PKI, tmp_pki_files: PKIFiles) -> None:
    served = tmp_pki_files.certfile.read_bytes()
    assert served.count(b"BEGIN CERTIFICATE") == 2
    assert served == pki.leaf.pem() + pki.intermediate.pem()
    assert pki.leaf.chain_pem(include_root=True).count(b"BEGIN CERTIFICATE") == 3
    assert pki.leaf.chain_der() == [pki.leaf.der(), pki.intermediate.der(), pki.root.der()]
    assert pki.leaf.chain_der(include_root=False) == [pki.leaf.der(), pki.intermediate.der()]
    assert pki.intermediate.chain_to_root() == [pki.intermediate, pki.root]
    assert b"BEGIN PRIVATE KEY" in tmp_pki_files.keyfile.read_bytes()  # PKCS#8, unencrypted


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_every_key_type_makes_a_working_chain(kind: KeyType, tmp_path: Path) -> None:
    pki = make_pki(key=kind)
    files = write_pki_files(pki, tmp_path)
    with TLSServer(files.certfile, files.keyfile) as srv:
        status, body, peer = https_get(client_context(files.root_ca), srv.port)
    assert (status, body) == (200, DEFAULT_BODY)
    assert spki_pin(x509.load_der_x509_certificate(peer)) == spki_pin(pki.leaf)


@pytest.mark.parametrize(
    ("root_key", "inter_key", "leaf_key"),
    [("rsa2048", "p384", "ed25519"), ("ed448", "rsa2048", "p256"), ("p521", "ed25519", "rsa2048")],
)
def test_mixed_key_types(
    root_key: KeyType, inter_key: KeyType, leaf_key: KeyType, tmp_path: Path
) -> None:
    root = new_root(key=root_key)
    leaf = root.issue_intermediate(key=inter_key).issue_leaf("localhost", key=leaf_key)
    certfile, keyfile = leaf.write(tmp_path)
    with TLSServer(certfile, keyfile) as srv:
        status, _, _ = https_get(client_context(root.pem()), srv.port)
    assert status == 200


def test_leaf_directly_under_root_and_wildcard(tmp_path: Path) -> None:
    root = new_root()
    leaf = root.issue_leaf("*.wild.test", "example.test")
    assert leaf.intermediates == []
    certfile, keyfile = leaf.write(tmp_path)
    with TLSServer(certfile, keyfile) as srv:
        ctx = client_context(root.pem())
        assert https_get(ctx, srv.port, "a.wild.test")[0] == 200
        assert https_get(ctx, srv.port, "example.test")[0] == 200
        tls_connect_fails(ctx, srv.port, "a.b.wild.test")


def test_expired_leaf_fails_verification(pki: PKI, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf = pki.intermediate.issue_leaf("localhost", not_after=now - dt.timedelta(days=1))
    assert leaf.cert.not_valid_after_utc < now
    certfile, keyfile = leaf.write(tmp_path)
    with TLSServer(certfile, keyfile) as srv:
        message = tls_connect_fails(client_context(pki.root.pem()), srv.port)
    assert "expired" in message


def test_not_yet_valid_leaf_fails_verification(pki: PKI, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf = pki.intermediate.issue_leaf("localhost", not_before=now + dt.timedelta(days=2))
    certfile, keyfile = leaf.write(tmp_path)
    with TLSServer(certfile, keyfile) as srv:
        message = tls_connect_fails(client_context(pki.root.pem()), srv.port)
    assert "not yet valid" in message


def test_expired_intermediate_fails_verification(pki: PKI, tmp_path: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    leaf = pki.root.issue_intermediate(not_after=past).issue_leaf("localhost")
    certfile, keyfile = leaf.write(tmp_path)
    with TLSServer(certfile, keyfile) as srv:
        message = tls_connect_fails(client_context(pki.root.pem()), srv.port)
    assert "expired" in message


def test_same_key_reissue_keeps_spki_pin(pki: PKI) -> None:
    again = pki.leaf.reissue()
    assert again.key is pki.leaf.key
    assert spki_pin(again) == spki_pin(pki.leaf) == spki_pin(pki.leaf.key)
    assert spki_pin(pki.leaf.pem()) == spki_pin(pki.leaf.der()) == spki_pin(pki.leaf.cert)
    assert cert_sha256(again) != cert_sha256(pki.leaf)
    other = pki.intermediate.issue_leaf("localhost", key=make_key("p256"))
    assert spki_pin(other) != spki_pin(pki.leaf)
    assert spki_pin(pki.leaf).startswith("sha256/") and len(spki_pin(pki.leaf)) == 7 + 44
    # Re-issued root with the same key: same SPKI pin, different certificate.
    root2 = new_root("Test Root CA", key=pki.root.key)
    assert spki_pin(root2) == spki_pin(pki.root) and root2.der() != pki.root.der()


def test_set_certificate_swaps_chain_for_new_connections(
    server: TLSServer, pki: PKI, rogue_pki: PKI, tmp_path: Path
) -> None:
    good, rogue = client_context(pki.root.pem()), client_context(rogue_pki.root.pem())
    assert https_get(good, server.port)[2] == pki.leaf.der()
    server.set_certificate(*rogue_pki.leaf.write(tmp_path / "rogue"))
    tls_connect_fails(good, server.port)
    assert https_get(rogue, server.port)[2] == rogue_pki.leaf.der()
    server.set_certificate(*pki.leaf.reissue().write(tmp_path / "rotated"))
    _, _, peer = https_get(good, server.port)
    assert peer != pki.leaf.der()
    assert spki_pin(peer) == spki_pin(pki.leaf)
    assert server.wait_idle()
    assert server.handshakes == 3


def test_post_body_recorded_and_custom_response(tmp_pki_files: PKIFiles) -> None:
    raw = b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile, response=raw) as srv:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", srv.port, context=client_context(tmp_pki_files.root_ca), timeout=10
        )
        try:
            conn.request("POST", "/submit", body=b"secret=1", headers={"X-Test": "yes"})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (418, b"no")
        finally:
            conn.close()
        assert srv.wait_idle()
        assert srv.received[0].endswith(b"\r\n\r\nsecret=1")
        assert b"X-Test: yes" in srv.total_received()


def test_tls_versions_alpn_and_tickets(tmp_pki_files: PKIFiles) -> None:
    with TLSServer(
        tmp_pki_files.certfile,
        tmp_pki_files.keyfile,
        tls_versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
        alpn=["h2", "http/1.1"],
        session_tickets=False,
    ) as srv:
        ctx = client_context(tmp_pki_files.root_ca)
        ctx.set_alpn_protocols(["http/1.1"])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == "TLSv1.2"
                assert tls.selected_alpn_protocol() == "http/1.1"
        assert srv.wait_idle()
        assert srv.negotiated[0]["version"] == "TLSv1.2"


def test_clients_that_send_nothing_are_handled_quietly(
    server: TLSServer, tmp_pki_files: PKIFiles
) -> None:
    # Plain TCP connect + close (no ClientHello at all).
    socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
    # Garbage instead of a ClientHello.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        with contextlib.suppress(OSError):  # an alert, EOF or a reset are all fine
            raw.recv(1024)
    # Full handshake, then close without sending application data (like a pin failure).
    ctx = client_context(tmp_pki_files.root_ca)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        ctx.wrap_socket(raw, server_hostname="localhost").close()
    assert server.wait_idle()
    assert server.handshakes == 1
    assert server.received == [b""]
    # ... and the server still works.
    assert https_get(ctx, server.port)[0] == 200


def test_stop_does_not_wait_for_idle_clients(tmp_pki_files: PKIFiles) -> None:
    srv = TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile).start()
    ctx = client_context(tmp_pki_files.root_ca)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as idle_tcp:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                assert idle_tcp.fileno() != -1
                time.sleep(0.1)
                started = time.monotonic()
                srv.stop()
                assert time.monotonic() - started < 2
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_ipv6_loopback(tmp_pki_files: PKIFiles, tmp_path: Path, pki: PKI) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    leaf = pki.intermediate.issue_leaf("localhost", "::1")
    certfile, keyfile = leaf.write(tmp_path)
    try:
        srv = TLSServer(certfile, keyfile, host="::1")
    except OSError:
        pytest.skip("::1 not available")
    with srv:
        assert srv.url(hostname="::1") == f"https://[::1]:{srv.port}/"
        status, _, _ = https_get(
            client_context(pki.root.pem()), srv.port, "::1", connect_host="::1"
        )
    assert status == 200


# -- WebSocket, proxy, forwarder --------------------------------------------------------------


def test_websocket_echo(tmp_pki_files: PKIFiles) -> None:
    connect = pytest.importorskip("websockets.sync.client").connect

    with WebSocketTLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as wss:
        assert wss.url() == f"wss://localhost:{wss.port}/"
        ctx = client_context(tmp_pki_files.root_ca)
        with connect(wss.url(hostname="127.0.0.1"), ssl=ctx, open_timeout=10) as ws:
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"
            ws.send(b"\x00bin")
            assert ws.recv(timeout=10) == b"\x00bin"
        assert wss.handshakes == 1
        assert wss.received == ["ping", b"\x00bin"]


def test_websocket_untrusted_root_fails_quietly(
    tmp_pki_files: PKIFiles, rogue_pki_files: PKIFiles
) -> None:
    connect = pytest.importorskip("websockets.sync.client").connect

    with WebSocketTLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as wss:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(
                wss.url(hostname="127.0.0.1"),
                ssl=client_context(rogue_pki_files.root_ca),
                open_timeout=10,
            )
        # TLS fine but the client hangs up before the WebSocket handshake.
        ctx = client_context(tmp_pki_files.root_ca)
        with socket.create_connection(("127.0.0.1", wss.port), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost").close()
    assert wss.handshakes == 0 and wss.received == []


def test_connect_proxy_tunnels_https(tmp_path: Path) -> None:
    pki = make_pki(hostnames=("pinned.test", "localhost"))
    files = write_pki_files(pki, tmp_path)
    ctx = client_context(files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv, ConnectProxy() as proxy:
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        for name in ("pinned.test", "localhost"):
            conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=10)
            conn.set_tunnel(name, srv.port)
            try:
                conn.request("GET", "/via-proxy")
                resp = conn.getresponse()
                assert (resp.status, resp.read()) == (200, DEFAULT_BODY)
            finally:
                conn.close()
        assert proxy.requests == [f"pinned.test:{srv.port}", f"localhost:{srv.port}"]
        assert srv.wait_idle()
        assert srv.server_names == ["pinned.test", "localhost"]
        assert all(r.startswith(b"GET /via-proxy ") for r in srv.received)


def test_connect_proxy_auth_and_bad_requests() -> None:
    with ConnectProxy(auth=("user", "pw")) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.set_tunnel("pinned.test", 1)
        with pytest.raises(OSError, match="407"):
            conn.request("GET", "/")
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            conn.request("GET", "/not-connect")
            assert conn.getresponse().status == 405
        finally:
            conn.close()
    with ConnectProxy() as proxy:
        # Nothing listens on the target port (use a freshly closed one) -> 502.
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
        probe.close()
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.set_tunnel("pinned.test", dead_port)
        with pytest.raises(OSError, match="502"):
            conn.request("GET", "/")
        conn.close()


def test_tcp_forwarder_emulates_dns(tmp_path: Path) -> None:
    pki = make_pki(hostnames=("example.test",))
    files = write_pki_files(pki, tmp_path)
    with TLSServer(files.certfile, files.keyfile) as srv, TCPForwarder(srv.address) as fwd:
        assert fwd.port != srv.port
        status, body, _ = https_get(client_context(files.root_ca), fwd.port, "example.test")
        assert (status, body) == (200, DEFAULT_BODY)
        assert fwd.connections == 1
        assert srv.wait_idle()
        assert srv.server_names == ["example.test"]
