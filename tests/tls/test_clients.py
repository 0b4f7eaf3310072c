"""Every client, against real loopback TLS servers: each scenario runs for each client.

The clients (tests/tls/_clients.py): http.client, urllib.request, urllib3, requests (adapter and
pinned_session), httpx sync and async, aiohttp, websockets sync and async, asyncio streams.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pytest

import certpin
from _support.pki import PKI, PKIFiles
from _support.servers import TLSServer
from tls._clients import Client, Handle, Pinning, fetch_error, find_in_chain
from tls._fixtures import Endpoint, Pins, Recorder, policy_for

Opener = Callable[[Client, Pinning], Handle]


def assert_pin_error(exc: BaseException) -> certpin.PinValidationError:
    found = find_in_chain(exc, certpin.PinValidationError)
    assert found is not None, f"no PinValidationError in the chain of {exc!r}"
    assert isinstance(found, certpin.PinValidationError)
    return found


def assert_zero_app_bytes(server: TLSServer) -> None:
    assert server.wait_idle()
    assert server.total_received() == b""


def assert_reported_per_handshake(client: Client, server: TLSServer, recorder: Recorder) -> None:
    """One on_failure call per failed handshake: retrying clients (urllib3's default Retry(3))
    handshake, fail and report again on every attempt.

    A blocking client sends its Finished before the check runs, so the server counts the
    handshake as complete. An asyncio client's Finished is still in the memory BIO when the
    check raises and is never flushed: the server sees an aborted handshake instead.
    """
    assert recorder.count == client.retries_handshakes
    if client.asyncio_based:
        assert server.handshakes <= recorder.count
    else:
        assert server.handshakes == recorder.count


@pytest.mark.parametrize("pin_on", ["leaf", "intermediate", "root"])
def test_pinned_request_passes(
    client: Client,
    open_client: Opener,
    endpoint: Endpoint,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
    pin_on: str,
) -> None:
    # The server sends leaf + intermediate only: a root pin matches because pins are checked
    # against the verified chain, which ends at the trust anchor.
    policy = policy_for("localhost", getattr(pins, pin_on), pins.spare)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
    assert handle.fetch(endpoint.url()) == endpoint.expected
    assert recorder.count == 0


def test_wrong_pin_blocked_with_zero_bytes(
    client: Client,
    open_client: Opener,
    server: TLSServer,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
) -> None:
    # Failures go to the plain HTTPS server for every client (websocket ones included): a
    # client that passed the TLS handshake would send its upgrade request, and it must not.
    policy = policy_for("localhost", pins.other, pins.spare)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
    exc = fetch_error(handle, server.url())
    err = assert_pin_error(exc)
    assert err.verdict is not None and err.verdict.status is certpin.VerdictStatus.FAILED
    assert "Certificate pinning failure for localhost" in str(err)
    assert_zero_app_bytes(server)
    assert_reported_per_handshake(client, server, recorder)
    assert all(not f.verdict.report_only for f in recorder.failures)


def test_report_only_mismatch_passes_and_reports_once(
    client: Client,
    open_client: Opener,
    endpoint: Endpoint,
    tmp_pki_files: PKIFiles,
    pki: PKI,
    pins: Pins,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = policy_for("localhost", pins.other, enforce=False)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
    with caplog.at_level(logging.WARNING, logger="certpin.enforce"):
        assert handle.fetch(endpoint.url()) == endpoint.expected
    assert recorder.count == 1
    failure = recorder.failures[0]
    assert failure.verdict.report_only
    assert failure.verdict.allowed
    assert failure.host == "localhost"
    assert failure.noted_hostname == "localhost"
    if client.asyncio_based:
        assert failure.port in (None, endpoint.port)
    else:
        assert failure.port == endpoint.port
    # Served: leaf + intermediate. Verified: leaf + intermediate + root.
    assert failure.served_chain == tuple(pki.leaf.chain_der(include_root=False))
    assert failure.verified_chain == tuple(pki.leaf.chain_der(include_root=True))
    assert failure.time.tzinfo is not None
    assert any("report-only" in r.getMessage() for r in caplog.records)


def test_unpinned_host_passes(
    client: Client,
    open_client: Opener,
    endpoint: Endpoint,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
) -> None:
    policy = policy_for("elsewhere.example", pins.other, pins.spare)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
    assert handle.fetch(endpoint.url()) == endpoint.expected
    assert recorder.count == 0


def test_unpinned_host_denied(
    client: Client,
    open_client: Opener,
    server: TLSServer,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
) -> None:
    policy = policy_for("elsewhere.example", pins.other, pins.spare, unpinned_hosts="deny")
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder))
    err = assert_pin_error(fetch_error(handle, server.url()))
    assert err.verdict is not None and err.verdict.status is certpin.VerdictStatus.DENIED
    assert_zero_app_bytes(server)
    assert_reported_per_handshake(client, server, recorder)


EXPIRES = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)


def test_expired_rule_passes_with_warning(
    client: Client,
    open_client: Opener,
    endpoint: Endpoint,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = policy_for("localhost", pins.other, pins.spare, expires="2030-06-01")
    pinning = Pinning(policy, tmp_pki_files.root_ca, recorder, clock=lambda: EXPIRES)
    handle = open_client(client, pinning)
    with caplog.at_level(logging.WARNING, logger="certpin.enforce"):
        assert handle.fetch(endpoint.url()) == endpoint.expected
    warnings = [
        r
        for r in caplog.records
        if r.name == "certpin.enforce" and r.levelno == logging.WARNING and "expired" in r.message
    ]
    assert len(warnings) == 1
    assert "localhost" in warnings[0].getMessage()
    assert recorder.count == 0  # expiry is not a pin failure


def test_one_second_before_expiry_blocks(
    client: Client,
    open_client: Opener,
    server: TLSServer,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
) -> None:
    policy = policy_for("localhost", pins.other, pins.spare, expires="2030-06-01")
    clock = lambda: EXPIRES - dt.timedelta(seconds=1)  # noqa: E731
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca, recorder, clock=clock))
    assert_pin_error(fetch_error(handle, server.url()))
    assert_zero_app_bytes(server)


class SwitchableProvider:
    """A PolicyProvider whose policy changes under a live client."""

    def __init__(self, policy: certpin.Policy) -> None:
        self.policy = policy

    def current_policy(self) -> certpin.Policy:
        return self.policy


def test_new_policy_applies_without_rebuilding_the_client(
    client: Client,
    open_client: Opener,
    endpoint: Endpoint,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
) -> None:
    good = policy_for("localhost", pins.intermediate, pins.spare)
    bad = policy_for("localhost", pins.other, pins.spare)
    provider = SwitchableProvider(good)
    handle = open_client(client, Pinning(provider, tmp_pki_files.root_ca, recorder))
    assert handle.fetch(endpoint.url()) == endpoint.expected
    provider.policy = bad
    assert_pin_error(fetch_error(handle, endpoint.url()))
    assert recorder.count == client.retries_handshakes
    provider.policy = good
    assert handle.fetch(endpoint.url()) == endpoint.expected
    assert recorder.count == client.retries_handshakes
