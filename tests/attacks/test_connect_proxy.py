"""Through an HTTP CONNECT proxy the TLS session is with the origin, so the origin's pins apply
(and the proxy, which only sees ciphertext, cannot swap the certificate unnoticed)."""

from __future__ import annotations

import asyncio
import http.client
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest

import certpin
from _support.pki import PKI, PKIFiles
from _support.servers import DEFAULT_BODY, ConnectProxy, TLSServer
from tls._clients import Pinning, find_in_chain
from tls._fixtures import Pins, Recorder, policy_for

HOST = "pinned.test"


def via_http_client(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    conn = http.client.HTTPSConnection(proxy.host, proxy.port, context=p.context(), timeout=10)
    conn.set_tunnel(HOST, port)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


def via_urllib(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy.url}),
        urllib.request.HTTPSHandler(context=p.context()),
    )
    with opener.open(url, timeout=10) as resp:
        return resp.read()  # type: ignore[no-any-return]


def via_urllib3(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    import urllib3

    with urllib3.ProxyManager(proxy.url, ssl_context=p.context(), retries=False, timeout=10) as pm:
        return pm.request("GET", url).data


def via_requests(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    from certpin.requests import pinned_session

    with pinned_session(p.policy, **p.adapter_kwargs()) as session:
        resp = session.get(url, proxies={"https": proxy.url}, timeout=10)
        resp.raise_for_status()
        return resp.content


def via_httpx(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    import httpx

    with httpx.Client(verify=p.context(), proxy=proxy.url, timeout=10) as client:
        resp = client.get(url)
        resp.raise_for_status()
        return resp.content


def via_httpx_async(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    import httpx

    async def main() -> bytes:
        async with httpx.AsyncClient(verify=p.context(), proxy=proxy.url, timeout=10) as client:
            resp = await client.get(url)
            resp.raise_for_status()
            return resp.content

    return asyncio.run(main())


def via_aiohttp(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    aiohttp = pytest.importorskip("aiohttp")

    async def main() -> bytes:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, proxy=proxy.url, ssl=p.context()) as resp:
                resp.raise_for_status()
                return await resp.read()

    return asyncio.run(main())


def via_certpin_http(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    # certpin's own HTTP client (bundle fetches, report uploads, webhooks) takes its proxy
    # from the environment, as urllib does.
    from certpin._io import http

    with mock.patch.dict(os.environ, {"HTTPS_PROXY": proxy.url}):
        response = http.request(url, context=p.context(), timeout=10, max_body=1 << 20)
    assert response.ok, response.status
    return response.body


def via_certpin_session(url: str, p: Pinning, proxy: ConnectProxy, port: int) -> bytes:
    # The keep-alive reader of the same client (CT logs) takes its proxy the same way.
    from certpin._io import http

    session = http.Session(context=p.context(), timeout=10)
    try:
        with mock.patch.dict(os.environ, {"HTTPS_PROXY": proxy.url}):
            response = session.get(url, max_body=1 << 20)
    finally:
        session.close()
    assert response.ok, response.status
    return response.body


VIA: dict[str, Callable[[str, Pinning, ConnectProxy, int], bytes]] = {
    "certpin._io.http": via_certpin_http,
    "certpin._io.http.Session": via_certpin_session,
    "http.client": via_http_client,
    "urllib.request": via_urllib,
    "urllib3": via_urllib3,
    "requests": via_requests,
    "httpx-sync": via_httpx,
    "httpx-async": via_httpx_async,
    "aiohttp": via_aiohttp,
}


@pytest.fixture
def origin(pki: PKI, tmp_path: Path) -> Iterator[TLSServer]:
    leaf = pki.intermediate.issue_leaf(HOST)
    certfile, keyfile = leaf.write(tmp_path / "origin")
    with TLSServer(certfile, keyfile) as srv:
        yield srv


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as p:
        yield p


@pytest.fixture(params=sorted(VIA))
def via(request: pytest.FixtureRequest) -> Callable[..., bytes]:
    return VIA[request.param]


def test_good_pins_pass_through_the_proxy(
    via: Callable[..., bytes],
    origin: TLSServer,
    proxy: ConnectProxy,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
) -> None:
    p = Pinning(policy_for(HOST, pins.intermediate, pins.spare), tmp_pki_files.root_ca, recorder)
    url = f"https://{HOST}:{origin.port}/"
    assert via(url, p, proxy, origin.port) == DEFAULT_BODY
    assert proxy.requests == [f"{HOST}:{origin.port}"]
    assert origin.server_names == [HOST]
    assert recorder.count == 0


def test_wrong_pins_are_blocked_through_the_proxy(
    via: Callable[..., bytes],
    origin: TLSServer,
    proxy: ConnectProxy,
    tmp_pki_files: PKIFiles,
    pins: Pins,
    recorder: Recorder,
) -> None:
    p = Pinning(policy_for(HOST, pins.other, pins.spare), tmp_pki_files.root_ca, recorder)
    url = f"https://{HOST}:{origin.port}/"
    try:
        via(url, p, proxy, origin.port)
    except Exception as exc:
        assert find_in_chain(exc, certpin.PinValidationError) is not None, repr(exc)
    else:
        raise AssertionError("request through the proxy was not blocked")
    assert proxy.requests and set(proxy.requests) == {f"{HOST}:{origin.port}"}
    assert origin.wait_idle() and origin.total_received() == b""
    assert recorder.count >= 1
    failure = recorder.failures[0]
    assert failure.host == HOST and failure.noted_hostname == HOST
    # PinFailure.port is the TCP peer's port: through a tunnel that is the *proxy's* port
    # (documented in docs/enforcement.md), or None on asyncio transports.
    assert failure.port in (None, proxy.port)


def test_plain_client_rejects_the_proxy_origin_without_our_ca(
    origin: TLSServer, proxy: ConnectProxy
) -> None:
    # Control: the CA that signed the origin is not a system root.
    import ssl

    plain = ssl.create_default_context()
    conn = http.client.HTTPSConnection(proxy.host, proxy.port, context=plain, timeout=10)
    conn.set_tunnel(HOST, origin.port)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/")
    conn.close()
