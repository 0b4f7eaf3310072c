"""MITM with a trusted-but-rogue CA, chain cleaning, and what CA validation alone must catch;
each scenario runs for every client of the table."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import certpin
from _support.pki import PKI, Leaf, PKIFiles, pems
from _support.servers import TLSServer, WebSocketTLSServer
from tls._clients import WS_MESSAGE, Client, Handle, Pinning, fetch_error, find_in_chain
from tls._fixtures import Endpoint, Pins, Recorder, policy_for

Opener = Callable[[Client, Pinning], Handle]


def serve(leaf: Leaf, chain_pem: bytes, directory: Path) -> TLSServer:
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "chain.pem", directory / "key.pem"
    certfile.write_bytes(chain_pem)
    keyfile.write_bytes(leaf.key_pem())
    return TLSServer(certfile, keyfile).start()


@pytest.fixture
def both_roots(pki: PKI, rogue_pki: PKI, tmp_path: Path) -> Path:
    """A CA bundle trusting the genuine root AND the attacker's (a rogue-but-trusted CA)."""
    path = tmp_path / "both-roots.pem"
    path.write_bytes(pems([pki.root, rogue_pki.root]))
    return path


@pytest.fixture
def cleaning_server(pki: PKI, rogue_pki: PKI, tmp_path: Path) -> Iterator[TLSServer]:
    """OkHttp CVE-2016-2402: the rogue chain with the genuine intermediate and root appended."""
    chain = rogue_pki.leaf.chain_pem(include_root=False) + pems([pki.intermediate, pki.root])
    srv = serve(rogue_pki.leaf, chain, tmp_path / "cleaning")
    yield srv
    srv.stop()


def assert_blocked_by_pins(exc: BaseException, server: TLSServer) -> None:
    assert find_in_chain(exc, certpin.PinValidationError) is not None, repr(exc)
    assert server.wait_idle()
    assert server.total_received() == b""


def assert_blocked_by_ca(exc: BaseException, server: TLSServer, recorder: Recorder) -> str:
    """CA/host validation (OpenSSL), not the pin check, rejected the handshake; the failure on
    the pinned host is reported all the same, as a CA failure with no verified chain."""
    err = find_in_chain(exc, ssl.SSLCertVerificationError)
    assert err is not None, repr(exc)
    assert find_in_chain(exc, certpin.PinValidationError) is None
    assert recorder.count >= 1  # one per handshake (urllib3 retries)
    for failure in recorder.failures:
        assert failure.verdict.status is certpin.VerdictStatus.UNTRUSTED
        assert failure.verified_chain == () and not failure.verdict.allowed
    assert server.wait_idle()
    assert server.handshakes == 0 and server.total_received() == b""
    return str(getattr(err, "verify_message", err))


def test_rogue_trusted_ca_is_blocked(
    client: Client,
    open_client: Opener,
    rogue_server: TLSServer,
    both_roots: Path,
    pins: Pins,
    recorder: Recorder,
) -> None:
    policy = policy_for("localhost", pins.intermediate, pins.root)
    handle = open_client(client, Pinning(policy, both_roots, recorder))
    assert_blocked_by_pins(fetch_error(handle, rogue_server.url()), rogue_server)
    assert recorder.count == client.retries_handshakes


def test_rogue_trusted_ca_passes_without_pins(
    client: Client,
    open_client: Opener,
    rogue_server: TLSServer,
    rogue_pki_files: PKIFiles,
    both_roots: Path,
    pins: Pins,
) -> None:
    # Control: the rogue server *is* trusted by CA validation (the attack would work unpinned).
    policy = policy_for("elsewhere.example", pins.intermediate, pins.root)
    handle = open_client(client, Pinning(policy, both_roots))
    if client.kind == "ws":  # the same rogue certificate, behind a WebSocket echo server
        with WebSocketTLSServer(rogue_pki_files.certfile, rogue_pki_files.keyfile) as wss:
            assert handle.fetch(wss.url()) == WS_MESSAGE.encode()
        return
    assert handle.fetch(rogue_server.url())


def test_chain_cleaning_is_blocked(
    client: Client,
    open_client: Opener,
    cleaning_server: TLSServer,
    both_roots: Path,
    pki: PKI,
    pins: Pins,
    recorder: Recorder,
) -> None:
    # The served chain contains the pinned intermediate and root, but the verified chain is
    # rogue leaf -> rogue intermediate -> rogue root: only the verified chain counts.
    policy = policy_for("localhost", pins.intermediate, pins.root)
    handle = open_client(client, Pinning(policy, both_roots, recorder))
    assert_blocked_by_pins(fetch_error(handle, cleaning_server.url()), cleaning_server)
    failure = recorder.failures[0]
    assert pki.intermediate.der() in failure.served_chain
    assert pki.root.der() in failure.served_chain
    assert pki.intermediate.der() not in failure.verified_chain
    assert pki.root.der() not in failure.verified_chain


def test_pinned_root_not_sent_by_server_passes(
    client: Client,
    open_client: Opener,
    endpoint: Endpoint,
    tmp_pki_files: PKIFiles,
    pki: PKI,
    pins: Pins,
    recorder: Recorder,
) -> None:
    # The server sends leaf + intermediate; the root only exists in the client's trust store.
    assert pki.root.pem() not in tmp_pki_files.certfile.read_bytes()
    policy = policy_for("localhost", pins.root, allow_single_pin=True)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
    assert handle.fetch(endpoint.url()) == endpoint.expected
    assert recorder.count == 0


def test_expired_leaf_fails_ca_validation(
    client: Client,
    open_client: Opener,
    pki: PKI,
    tmp_pki_files: PKIFiles,
    tmp_path: Path,
    pins: Pins,
    recorder: Recorder,
) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = pki.leaf.reissue(not_after=now - dt.timedelta(days=1))
    srv = serve(expired, expired.chain_pem(), tmp_path / "expired")
    try:
        # Even a policy the leaf's key satisfies cannot rescue an expired certificate.
        policy = policy_for("localhost", pins.leaf, pins.root)
        handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
        message = assert_blocked_by_ca(fetch_error(handle, srv.url()), srv, recorder)
        assert "expired" in message
    finally:
        srv.stop()


def test_certificate_for_another_host_fails_hostname_check(
    client: Client,
    open_client: Opener,
    pki: PKI,
    tmp_pki_files: PKIFiles,
    tmp_path: Path,
    pins: Pins,
    recorder: Recorder,
) -> None:
    # A certificate chaining to the pinned CA, but for other.test: the pins would match, the
    # host name check must still refuse it.
    other = pki.intermediate.issue_leaf("other.test")
    srv = serve(other, other.chain_pem(), tmp_path / "other")
    try:
        policy = policy_for("localhost", pins.intermediate, pins.root)
        handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
        message = assert_blocked_by_ca(fetch_error(handle, srv.url()), srv, recorder)
        assert "hostname" in message.lower() or "match" in message.lower()
    finally:
        srv.stop()
