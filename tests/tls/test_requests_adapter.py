"""certpin.requests: HTTPS-only pinned hosts, verify= handling, trust anchors, pool separation."""

from __future__ import annotations

import contextlib
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import urllib3

import certpin
from _support.pki import PKI, PKIFiles
from _support.servers import DEFAULT_BODY, ConnectProxy, TLSServer, _read_http_request
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


# -- forwarding proxies: the proxy, not the pin check, would see the origin's certificate ---------


class ForwardingProxy(TLSServer):
    """An HTTPS forwarding proxy on loopback (what urllib3's ``use_forwarding_for_https`` talks
    to): the client's TLS session ends here, the request line carries the absolute URL, and the
    proxy makes its own TLS connection to the origin (127.0.0.1:PORT, verified with `cafile`).
    ``received`` / ``handshakes`` record what reached the proxy."""

    name = "forwarding-proxy"

    def __init__(self, certfile: Path, keyfile: Path, cafile: Path) -> None:
        self.upstream = ssl.create_default_context(cafile=str(cafile))
        super().__init__(certfile, keyfile)

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            ctx = self._context
        tls = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        self._track(tls)
        try:
            tls.do_handshake()
            with self._lock:
                self.handshakes += 1
            request = _read_http_request(tls)
            with self._lock:
                self.received.append(request)
            method, target, _version = request.split(b"\r\n", 1)[0].decode().split(" ")
            url = urlsplit(target)
            assert url.scheme == "https" and url.hostname and url.port, target
            with socket.create_connection(("127.0.0.1", url.port), timeout=10) as raw:
                with self.upstream.wrap_socket(raw, server_hostname=url.hostname) as up:
                    up.sendall(
                        f"{method} {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    response = b""
                    while chunk := up.recv(65536):
                        response += chunk
            tls.sendall(response)
        except (OSError, ValueError, AssertionError) as exc:
            self._record_error(exc)
        finally:
            self._untrack(tls)
            with contextlib.suppress(OSError):
                tls.close()


@pytest.fixture
def forwarding_proxy(tmp_pki_files: PKIFiles) -> Iterator[ForwardingProxy]:
    with ForwardingProxy(
        tmp_pki_files.certfile, tmp_pki_files.keyfile, tmp_pki_files.root_ca
    ) as proxy:
        yield proxy


class ForwardingAdapter(PinningAdapter):
    """What an application writes to use a forwarding proxy with requests: a ProxyManager with
    ``use_forwarding_for_https`` (requests never asks for one itself), and the absolute URL on
    the request line (requests sends the origin form for https://, which no forwarding proxy
    can route)."""

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        with warnings.catch_warnings():
            # urllib3: "Passing ssl_context when use_forwarding_for_https=True is deprecated"
            warnings.simplefilter("ignore", FutureWarning)
            return super().proxy_manager_for(proxy, use_forwarding_for_https=True, **proxy_kwargs)

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        return request.url or ""


def _forwarding_session(policy: certpin.Policy, files: PKIFiles, proxy: ForwardingProxy) -> Any:
    session = requests.Session()
    session.mount("https://", ForwardingAdapter(policy, cafile=files.root_ca))
    session.proxies = {"https": f"https://localhost:{proxy.port}"}
    return session


@pytest.mark.usefixtures("loopback_names")
def test_forwarding_proxy_is_refused_for_a_pinned_origin(
    server: TLSServer, forwarding_proxy: ForwardingProxy, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    policy = policy_for("pinned.test", pins.root, pins.spare)
    with _forwarding_session(policy, tmp_pki_files, forwarding_proxy) as session:
        with pytest.raises(InsecureRequestError, match="forwarding proxy .* pinned host"):
            session.get(f"https://pinned.test:{server.port}/", timeout=5)
        # every spelling of the pinned host is that host
        with pytest.raises(InsecureRequestError, match="forwarding proxy"):
            session.get(f"https://PINNED.test.:{server.port}/", timeout=5)
    assert forwarding_proxy.wait_idle() and server.wait_idle()
    assert forwarding_proxy.handshakes == 0 and forwarding_proxy.total_received() == b""
    assert server.handshakes == 0


@pytest.mark.usefixtures("loopback_names")
def test_forwarding_proxy_still_serves_an_unpinned_origin(
    pki: PKI,
    forwarding_proxy: ForwardingProxy,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    tmp_path: Path,
) -> None:
    # The twin: the same session reaches an unpinned origin, through the proxy.
    leaf = pki.intermediate.issue_leaf("open.test")
    policy = policy_for("pinned.test", pins.root, pins.spare)
    with TLSServer(*leaf.write(tmp_path / "open")) as origin:
        with _forwarding_session(policy, tmp_pki_files, forwarding_proxy) as session:
            resp = session.get(f"https://open.test:{origin.port}/", timeout=5)
        assert resp.content == DEFAULT_BODY, forwarding_proxy.errors
    assert forwarding_proxy.total_received().startswith(
        f"GET https://open.test:{origin.port}/ HTTP/1.1".encode()
    )


@pytest.mark.usefixtures("loopback_names")
def test_forwarding_proxy_refused_for_every_host_under_deny(
    server: TLSServer, forwarding_proxy: ForwardingProxy, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # The proxy itself (localhost) is pinned, so its own TLS session passes the check; the
    # unpinned origin behind it could never be checked.
    policy = certpin.Policy.from_dict(
        {
            "unpinned_hosts": "deny",
            "domains": {h: {"pins": [pins.root, pins.spare]} for h in ("pinned.test", "localhost")},
        }
    )
    with _forwarding_session(policy, tmp_pki_files, forwarding_proxy) as session:
        with pytest.raises(InsecureRequestError, match="denies unpinned hosts"):
            session.get(f"https://open.test:{server.port}/", timeout=5)
    assert forwarding_proxy.wait_idle()
    assert forwarding_proxy.handshakes == 0


def test_plain_urllib3_forwarding_checks_only_the_proxy(
    server: TLSServer, forwarding_proxy: ForwardingProxy, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    """Why the adapter refuses: a PinningContext given to a forwarding urllib3.ProxyManager
    checks the proxy's certificate only (server_hostname is the proxy); the origin's wrong pins
    never meet the pin check. certpin cannot see a user-built ProxyManager (docs/enforcement.md).
    """
    wrong = policy_for("127.0.0.1", pins.other, pins.spare)
    ctx = certpin.create_default_context(wrong, cafile=str(tmp_pki_files.root_ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        manager = urllib3.ProxyManager(
            f"https://localhost:{forwarding_proxy.port}",
            ssl_context=ctx,
            use_forwarding_for_https=True,
            retries=False,
        )
    with manager:
        resp = manager.request("GET", f"https://127.0.0.1:{server.port}/", timeout=5)
    assert resp.data == DEFAULT_BODY  # the origin's pin (pins.other) was never checked
    # the twin: the same context and origin without the proxy is blocked by the pin check
    with urllib3.PoolManager(ssl_context=ctx, retries=False) as direct:
        with pytest.raises(urllib3.exceptions.SSLError) as err:
            direct.request("GET", f"https://127.0.0.1:{server.port}/", timeout=5)
    assert find_in_chain(err.value, certpin.PinValidationError) is not None


@pytest.mark.usefixtures("loopback_names")
def test_a_connect_tunnel_is_not_refused(
    pki: PKI, tmp_pki_files: PKIFiles, pins: Pins, tmp_path: Path
) -> None:
    # The refusal's scope: a tunnelling proxy keeps the TLS session with the origin, so the
    # origin's pins apply and the adapter lets the request through.
    leaf = pki.intermediate.issue_leaf("pinned.test")
    with TLSServer(*leaf.write(tmp_path / "pinned")) as origin, ConnectProxy() as proxy:
        session = pinned_session(
            policy_for("pinned.test", pins.root, pins.spare), cafile=tmp_pki_files.root_ca
        )
        with session:
            resp = session.get(
                f"https://pinned.test:{origin.port}/", proxies={"https": proxy.url}, timeout=5
            )
        assert resp.content == DEFAULT_BODY
        assert proxy.requests == [f"pinned.test:{origin.port}"]
