"""TLS session resumption: a resumed handshake carries no certificate chain (both chain APIs are
empty), so the pin check must use the chain verified when the session was made, or fail closed.

Plain `ssl` sockets: http.client and the HTTP libraries never pass ``session=``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

import certpin
from _support.pki import PKIFiles
from _support.servers import TLSServer
from tls._fixtures import Pins, Recorder, policy_for

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture(params=VERSIONS, ids=lambda v: v.name)
def resuming_server(request: pytest.FixtureRequest, tmp_pki_files: PKIFiles) -> Iterator[TLSServer]:
    version = request.param
    with TLSServer(
        tmp_pki_files.certfile, tmp_pki_files.keyfile, tls_versions=(version, version)
    ) as srv:
        yield srv


class Provider:
    def __init__(self, policy: certpin.Policy) -> None:
        self.policy = policy

    def current_policy(self) -> certpin.Policy:
        return self.policy


def get(
    server: TLSServer, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession | None, bool]:
    """One GET; returns the session (read after the response: TLS 1.3 tickets arrive late)
    and whether this connection resumed."""
    raw = socket.create_connection(server.address, timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        while tls.recv(65536):
            pass
        return tls.session, tls.session_reused


def test_resumed_session_is_rechecked_against_the_remembered_chain(
    resuming_server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, recorder: Recorder
) -> None:
    provider = Provider(policy_for("localhost", pins.intermediate, pins.spare))
    ctx = certpin.create_default_context(
        provider, cafile=tmp_pki_files.root_ca, on_failure=recorder
    )
    session, reused = get(resuming_server, ctx)
    assert session is not None and not reused
    _, reused = get(resuming_server, ctx, session)
    assert reused  # the good pins pass on the remembered chain
    # Now the policy no longer trusts this chain: the resumed handshake must be re-checked
    # (there is no new chain, so this proves the remembered one is used, not skipped).
    provider.policy = policy_for("localhost", pins.other, pins.spare)
    with pytest.raises(certpin.PinValidationError) as info:
        get(resuming_server, ctx, session)
    assert info.value.verdict is not None
    assert len(info.value.verdict.chain) == 3  # leaf, intermediate, root: the remembered chain
    assert recorder.count == 1
    assert recorder.failures[0].verified_chain
    assert recorder.failures[0].served_chain == ()  # nothing was served on resumption


def test_resumed_session_with_unknown_chain_fails_closed(
    resuming_server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, recorder: Recorder
) -> None:
    ctx = certpin.create_default_context(
        policy_for("localhost", pins.intermediate, pins.spare),
        cafile=tmp_pki_files.root_ca,
        on_failure=recorder,
    )
    session, _ = get(resuming_server, ctx)
    assert session is not None
    # CPython refuses a session from another context ("Session refers to a different
    # SSLContext"), so a session whose chain certpin never saw is crafted by forgetting it.
    ctx._certpin_sessions.clear()
    before = resuming_server.total_received()
    with pytest.raises(certpin.PinValidationError, match="no verified certificate chain"):
        get(resuming_server, ctx, session)
    assert resuming_server.wait_idle()
    assert resuming_server.total_received() == before  # nothing sent on the resumed connection
    assert recorder.count == 1


def test_resumed_session_for_an_unpinned_host_also_needs_a_chain(
    resuming_server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # An empty chain never passes, not even for a host without a rule.
    ctx = certpin.create_default_context(
        policy_for("elsewhere.example", pins.other, pins.spare), cafile=tmp_pki_files.root_ca
    )
    session, _ = get(resuming_server, ctx)
    _, reused = get(resuming_server, ctx, session)
    assert reused
    ctx._certpin_sessions.clear()
    with pytest.raises(certpin.PinValidationError):
        get(resuming_server, ctx, session)


def test_sessions_cannot_cross_contexts(
    resuming_server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    policy = policy_for("localhost", pins.intermediate, pins.spare)
    a = certpin.create_default_context(policy, cafile=tmp_pki_files.root_ca)
    b = certpin.create_default_context(policy, cafile=tmp_pki_files.root_ca)
    plain = ssl.create_default_context(cafile=str(tmp_pki_files.root_ca))
    session, _ = get(resuming_server, a)
    for other in (b, plain):
        with pytest.raises(ValueError, match="different SSLContext"):
            get(resuming_server, other, session)
