"""The verified chain looks the same on every Python (3.11/3.12 private API, 3.13 public API),
partial chains are opt-in, and truststore composes with certpin."""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Iterator

import pytest

import certpin
from _support.pki import PKI, PKIFiles
from _support.servers import DEFAULT_BODY, TLSServer
from tls._clients import Pinning, client_by_name, find_in_chain
from tls._fixtures import Pins, Recorder, policy_for


def handshake(ctx: ssl.SSLContext, server: TLSServer) -> tuple[bytes, ...]:
    with socket.create_connection(server.address, timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls._certpin_verified  # type: ignore[attr-defined,no-any-return]


def test_verified_chain_ends_at_the_root_on_every_python(
    server: TLSServer, tmp_pki_files: PKIFiles, pki: PKI, pins: Pins
) -> None:
    ctx = certpin.create_default_context(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    assert handshake(ctx, server) == tuple(pki.leaf.chain_der(include_root=True))


def test_public_chain_api_matches_on_313(
    server: TLSServer, tmp_pki_files: PKIFiles, pki: PKI, pins: Pins
) -> None:
    if sys.version_info < (3, 13):
        pytest.skip("get_verified_chain() is public from Python 3.13")
    ctx = certpin.create_default_context(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with socket.create_connection(server.address, timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tuple(tls.get_verified_chain()) == tls._certpin_verified  # type: ignore[attr-defined]
            assert tuple(tls.get_unverified_chain()) == tuple(pki.leaf.chain_der(False))


def test_intermediate_as_trust_anchor_needs_partial_chain_opt_in(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # Python 3.13's ssl.create_default_context() sets VERIFY_X509_PARTIAL_CHAIN; certpin clears
    # it, so trusting only the intermediate is a CA validation failure, as on 3.11.
    policy = policy_for("localhost", pins.intermediate, pins.spare)
    ctx = certpin.create_default_context(policy, cafile=tmp_pki_files.intermediate_ca)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(ctx, server)
    assert not isinstance(info.value, certpin.PinValidationError)


def test_partial_chain_hides_the_root_pin(
    server: TLSServer, tmp_pki_files: PKIFiles, pki: PKI, pins: Pins
) -> None:
    # Opted in: the chain ends at the trusted intermediate, so a root pin cannot match.
    ok = certpin.create_default_context(
        policy_for("localhost", pins.intermediate, pins.spare),
        cafile=tmp_pki_files.intermediate_ca,
        allow_partial_chain=True,
    )
    assert handshake(ok, server) == tuple(pki.leaf.chain_der(include_root=False))
    root_only = certpin.create_default_context(
        policy_for("localhost", pins.root, pins.spare),
        cafile=tmp_pki_files.intermediate_ca,
        allow_partial_chain=True,
    )
    with pytest.raises(certpin.PinValidationError):
        handshake(root_only, server)


@pytest.fixture
def injected_truststore() -> Iterator[None]:
    truststore = pytest.importorskip("truststore")
    # aiohttp captures ssl.SSLContext at import time (client_reqrep.SSL_ALLOWED_TYPES): first
    # imported while injected, it would reject every plain SSLContext once the injection is
    # undone below and poison later tests. Import the clients before injecting.
    pytest.importorskip("aiohttp")
    import httpx  # noqa: F401
    import requests  # noqa: F401

    truststore.inject_into_ssl()
    try:
        yield
    finally:
        truststore.extract_from_ssl()


@pytest.mark.usefixtures("injected_truststore")
@pytest.mark.parametrize("name", ["http.client", "requests-adapter", "httpx-sync", "aiohttp"])
def test_certpin_keeps_working_after_truststore_injection(
    name: str, server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, recorder: Recorder
) -> None:
    assert ssl.SSLContext.__module__.startswith("truststore")
    # certpin builds on CPython's own class but still passes isinstance(ctx, ssl.SSLContext)
    # against the injected class: aiohttp's connector checks that per request and, failing it,
    # silently used an UNVERIFIED context (no CA check, no pins) before certpin handled this.
    ctx = certpin.create_default_context(policy_for("localhost", pins.root, pins.spare))
    assert isinstance(ctx, ssl.SSLContext)
    assert isinstance(ctx, certpin.PinningContext)
    assert type(ctx) is certpin.PinningContext
    client = client_by_name(name)
    good = client.open(
        Pinning(policy_for("localhost", pins.root, pins.spare), tmp_pki_files.root_ca)
    )
    bad = client.open(
        Pinning(policy_for("localhost", pins.other, pins.spare), tmp_pki_files.root_ca, recorder)
    )
    try:
        assert good.fetch(server.url()) == DEFAULT_BODY
        with pytest.raises(Exception) as info:
            bad.fetch(server.url())
        assert find_in_chain(info.value, certpin.PinValidationError) is not None
        assert recorder.count == 1
    finally:
        good.close()
        bad.close()


@pytest.mark.skipif(sys.platform != "linux", reason="trust='truststore' is Linux-only")
def test_trust_truststore_on_linux(server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins) -> None:
    pytest.importorskip("truststore")
    policy = policy_for("localhost", pins.root, pins.spare)
    # The OS store does not know the test root: CA validation fails...
    system_only = certpin.create_default_context(policy, trust="truststore")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(system_only, server)
    # ...and with the test root added, the pin check runs on the OpenSSL-verified chain.
    with_root = certpin.create_default_context(
        policy, trust="truststore", cafile=tmp_pki_files.root_ca
    )
    assert len(handshake(with_root, server)) == 3


def test_trust_truststore_refused_off_linux(monkeypatch: pytest.MonkeyPatch, pins: Pins) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(certpin.InsecureContextError, match="no OpenSSL-verified chain"):
        certpin.create_default_context(
            policy_for("localhost", pins.root, pins.spare), trust="truststore"
        )
