"""Pool reuse across policies: a connection made under one pinning context is never handed to
a request configured with another (urllib3's pool key includes ``ssl_context``)."""

from __future__ import annotations

import pytest
import requests
import urllib3

import certpin
from _support.pki import PKIFiles
from _support.servers import DEFAULT_BODY, TLSServer
from certpin.requests import PinningAdapter
from tls._clients import find_in_chain
from tls._fixtures import Pins, Recorder, policy_for


def test_two_adapters_on_one_host_never_share_a_connection(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    good, bad = Recorder(), Recorder()
    a = PinningAdapter(
        policy_for("localhost", pins.root, pins.spare),
        cafile=tmp_pki_files.root_ca,
        on_failure=good,
    )
    b = PinningAdapter(
        policy_for("localhost", pins.other, pins.spare),
        cafile=tmp_pki_files.root_ca,
        on_failure=bad,
    )
    with requests.Session() as sa, requests.Session() as sb:
        sa.mount("https://", a)
        sb.mount("https://", b)
        assert sa.get(server.url(), timeout=5).content == DEFAULT_BODY
        with pytest.raises(requests.exceptions.SSLError):
            sb.get(server.url(), timeout=5)
    assert good.count == 0 and bad.count == 1


def test_urllib3_pool_key_includes_the_context(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    # One PoolManager, one host, two pinning contexts through pool_kwargs: urllib3's pool key
    # includes ssl_context, so B gets its own pool and its own (failing) pin check.
    good, bad = Recorder(), Recorder()
    ctx_a = certpin.create_default_context(
        policy_for("localhost", pins.root, pins.spare),
        cafile=tmp_pki_files.root_ca,
        on_failure=good,
    )
    ctx_b = certpin.create_default_context(
        policy_for("localhost", pins.other, pins.spare),
        cafile=tmp_pki_files.root_ca,
        on_failure=bad,
    )
    with urllib3.PoolManager(retries=False) as pm:
        pool_a = pm.connection_from_url(server.url(), pool_kwargs={"ssl_context": ctx_a})
        assert pool_a.urlopen("GET", "/").data == DEFAULT_BODY
        pool_b = pm.connection_from_url(server.url(), pool_kwargs={"ssl_context": ctx_b})
        assert pool_b is not pool_a
        with pytest.raises(urllib3.exceptions.SSLError) as info:
            pool_b.urlopen("GET", "/")
    assert find_in_chain(info.value, certpin.PinValidationError) is not None
    assert good.count == 0 and bad.count == 1
