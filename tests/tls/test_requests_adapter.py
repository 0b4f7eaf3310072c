"""certpin.requests: HTTPS-only pinned hosts, verify= handling, trust anchors, pool separation."""

from __future__ import annotations

import pytest
import requests
import urllib3

import certpin
from _support.pki import PKIFiles
from _support.servers import DEFAULT_BODY, TLSServer
from certpin.requests import InsecureRequestError, PinningAdapter, pinned_session
from tls._clients import find_in_chain
from tls._fixtures import Pins, Recorder, policy_for


def test_plain_http_to_pinned_host_is_refused(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    session = pinned_session(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with session, pytest.raises(InsecureRequestError, match="pinned host localhost"):
        session.get(f"http://localhost:{server.port}/", timeout=5)
    assert server.wait_idle()
    assert server.handshakes == 0 and server.total_received() == b""


def test_plain_http_to_unpinned_host_is_allowed(tmp_pki_files: PKIFiles, pins: Pins) -> None:
    # Not refused by the adapter: the request goes out (and fails to connect, nothing listens).
    session = pinned_session(
        policy_for("elsewhere.example", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with session, pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.1:9/", timeout=2)


@pytest.mark.parametrize("verify", [False, "/etc/ssl/certs/ca-certificates.crt"])
def test_per_request_verify_is_refused(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, verify: bool | str
) -> None:
    session = pinned_session(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with session, pytest.raises(certpin.InsecureContextError):
        session.get(server.url(), verify=verify, timeout=5)
    assert server.wait_idle()
    assert server.handshakes == 0


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_env_ca_bundle_is_ignored_not_applied(
    server: TLSServer,
    rogue_server: TLSServer,
    tmp_pki_files: PKIFiles,
    rogue_pki_files: PKIFiles,
    pins: Pins,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
) -> None:
    # requests turns the env bundle into a per-request verify="path". It is machine config, so
    # the adapter ignores it (and says so once): here it names the *rogue* root, and the rogue
    # server must still fail CA validation while the genuine one passes.
    monkeypatch.setenv(variable, str(rogue_pki_files.root_ca))
    adapter = PinningAdapter(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with requests.Session() as session, caplog.at_level("INFO", logger="certpin.requests"):
        session.mount("https://", adapter)
        assert session.get(server.url(), timeout=5).content == DEFAULT_BODY
        assert session.get(server.url(), timeout=5).content == DEFAULT_BODY
        with pytest.raises(requests.exceptions.SSLError) as exc_info:
            session.get(rogue_server.url(), timeout=5)
    assert find_in_chain(exc_info.value, certpin.PinValidationError) is None
    notes = [r for r in caplog.records if "from the environment" in r.getMessage()]
    assert len(notes) == 1
    assert adapter.ssl_context.cert_store_stats()["x509_ca"] == 1
    assert rogue_server.wait_idle()
    assert rogue_server.total_received() == b""


def test_explicit_per_request_bundle_still_refused_with_env_set(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_pki_files.root_ca))
    session = pinned_session(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with session, pytest.raises(certpin.InsecureContextError, match="per-request CA bundle"):
        session.get(server.url(), verify="/etc/ssl/certs/ca-certificates.crt", timeout=5)


def test_adapter_does_not_add_certifi_roots(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # HTTPAdapter.cert_verify would point urllib3 at certifi's bundle, and urllib3 would load it
    # into the pinning context: the adapter's trust anchors must stay the ones it was given.
    adapter = PinningAdapter(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with requests.Session() as session:
        session.mount("https://", adapter)
        assert session.get(server.url(), timeout=5).content == DEFAULT_BODY
    assert adapter.ssl_context.cert_store_stats()["x509_ca"] == 1


def test_default_max_retries_means_one_handshake_per_failure(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, recorder: Recorder
) -> None:
    session = pinned_session(
        policy_for("localhost", pins.other, pins.spare),
        cafile=tmp_pki_files.root_ca,
        on_failure=recorder,
    )
    with session, pytest.raises(requests.exceptions.SSLError) as info:
        session.get(server.url(), timeout=5)
    assert find_in_chain(info.value, certpin.PinValidationError) is not None
    assert server.wait_idle()
    assert recorder.count == server.handshakes == 1


def test_explicit_retries_report_every_attempt(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins, recorder: Recorder
) -> None:
    # With max_retries=Retry(2), requests retries the SSL error: 3 handshakes, 3 reports.
    adapter = PinningAdapter(
        policy_for("localhost", pins.other, pins.spare),
        cafile=tmp_pki_files.root_ca,
        on_failure=recorder,
        max_retries=urllib3.Retry(2, backoff_factor=0),
    )
    with requests.Session() as session:
        session.mount("https://", adapter)
        with pytest.raises(requests.exceptions.SSLError):
            session.get(server.url(), timeout=5)
    assert server.wait_idle()
    assert recorder.count == server.handshakes == 3
    assert server.total_received() == b""


def test_adapter_pool_key_carries_the_context(tmp_pki_files: PKIFiles, pins: Pins) -> None:
    a = PinningAdapter(policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca)
    b = PinningAdapter(
        policy_for("localhost", pins.other, pins.spare), cafile=tmp_pki_files.root_ca
    )
    req = requests.Request("GET", "https://localhost:1/").prepare()
    _, kw_a = a.build_connection_pool_key_attributes(req, True)
    _, kw_b = b.build_connection_pool_key_attributes(req, True)
    assert kw_a["ssl_context"] is a.ssl_context
    assert kw_b["ssl_context"] is b.ssl_context
    assert a.ssl_context is not b.ssl_context


def test_per_request_client_cert_is_refused(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # urllib3 would load it into the adapter's shared context: every later host would get it.
    session = pinned_session(
        policy_for("localhost", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with session, pytest.raises(certpin.InsecureContextError, match="client_cert"):
        session.get(server.url(), cert=(str(tmp_pki_files.certfile), str(tmp_pki_files.keyfile)))
    assert server.wait_idle()
    assert server.handshakes == 0


def test_adapter_level_client_cert_is_loaded(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # Any cert/key pair proves the plumbing: the adapter's context holds it, and requests work.
    adapter = PinningAdapter(
        policy_for("localhost", pins.root, pins.spare),
        cafile=tmp_pki_files.root_ca,
        client_cert=(str(tmp_pki_files.certfile), str(tmp_pki_files.keyfile)),
    )
    with requests.Session() as session:
        session.mount("https://", adapter)
        assert session.get(server.url(), timeout=5).content == DEFAULT_BODY


def test_plain_http_refused_for_any_host_under_deny(pins: Pins) -> None:
    session = pinned_session(policy_for("localhost", pins.root, pins.spare, unpinned_hosts="deny"))
    with session, pytest.raises(InsecureRequestError, match="denies unpinned hosts"):
        session.get("http://127.0.0.1:9/", timeout=2)
    allow = pinned_session(policy_for("localhost", pins.root, pins.spare))
    with allow, pytest.raises(requests.exceptions.ConnectionError):
        allow.get("http://127.0.0.1:9/", timeout=2)  # allowed through: port 9 is closed
