"""Spelling a pinned address another way must not step around its pins.

The attacker holds a certificate for 127.0.0.1 from a CA the client trusts (a rogue-but-trusted
CA: the case pinning exists for). The policy pins 127.0.0.1. Every real client is pointed at the
rogue server with each spelling glibc and OpenSSL accept for 127.0.0.1; each must be blocked by
the pin check (or refuse the URL itself), and the genuine server must pass with the same spelling.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import certpin
import certpin.dynamic
from _support.pki import PKI, make_key, make_pki, spki_pin
from _support.servers import DEFAULT_BODY, TLSServer
from certpin.requests import InsecureRequestError, pinned_session
from tls._clients import HTTP_CLIENTS, Client, Pinning, asyncio_get, find_in_chain

# Each spelling the resolver (inet_aton) reads as 127.0.0.1. The certificates carry them as
# SAN entries where OpenSSL checks them as DNS names (127.1, 0x7f.1…), as a rogue CA can issue.
SPELLINGS = [
    "127.000.000.001",
    "127.0.0.01",
    "127.1",
    "0x7f.1",
    "2130706433",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
]
SANS = ["127.0.0.1", "localhost", "127.1", "0x7f.1", "2130706433", "127.0.0.1.", "::ffff:127.0.0.1"]


@pytest.fixture(scope="module")
def genuine() -> PKI:
    return make_pki(SANS)


@pytest.fixture(scope="module")
def rogue() -> PKI:
    return make_pki(SANS, root_name="Rogue Root CA", intermediate_name="Rogue CA")


@pytest.fixture
def servers(
    genuine: PKI, rogue: PKI, tmp_path: Path
) -> Iterator[tuple[TLSServer, TLSServer, Path]]:
    cafile = tmp_path / "both-roots.pem"  # the client trusts the rogue CA too
    cafile.write_bytes(genuine.root.pem() + rogue.root.pem())
    with (
        TLSServer(*genuine.leaf.write(tmp_path / "genuine")) as good,
        TLSServer(*rogue.leaf.write(tmp_path / "rogue")) as bad,
    ):
        yield good, bad, cafile


@pytest.fixture
def policy(genuine: PKI) -> certpin.Policy:
    return certpin.Policy.from_dict(
        {"domains": {"127.0.0.1": {"pins": [spki_pin(genuine.root), spki_pin(make_key())]}}}
    )


_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def resolver_takes_trailing_dots(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc looks "127.0.0.1." up in DNS; an attacker's resolver answers 127.0.0.1."""

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("127.0.0.1.", b"127.0.0.1."):  # anyio passes the idna-encoded bytes
            host = "127.0.0.1"
        return _real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def _outcome(client: Client, pinning: Pinning, url: str) -> str:
    handle = client.open(pinning)
    try:
        body = handle.fetch(url)
    except Exception as exc:  # noqa: BLE001 - classify whatever the client raised
        if find_in_chain(exc, certpin.PinValidationError) is not None:
            return "pin-blocked"
        return f"client error: {type(exc).__name__}: {exc}"
    finally:
        handle.close()
    return "ok" if body == DEFAULT_BODY else f"unexpected body {body[:40]!r}"


@pytest.mark.usefixtures("resolver_takes_trailing_dots")
@pytest.mark.parametrize("client", HTTP_CLIENTS, ids=str)
def test_every_spelling_of_a_pinned_address_is_pinned(
    client: Client,
    servers: tuple[TLSServer, TLSServer, Path],
    policy: certpin.Policy,
) -> None:
    good, bad, cafile = servers
    accepted = 0
    for spelling in SPELLINGS:
        genuine_result = _outcome(
            client, Pinning(policy, cafile), f"https://{spelling}:{good.port}/"
        )
        rogue_result = _outcome(client, Pinning(policy, cafile), f"https://{spelling}:{bad.port}/")
        if genuine_result == "ok":
            accepted += 1
            assert rogue_result == "pin-blocked", (client.name, spelling, rogue_result)
        else:
            # The client refuses this spelling itself (httpx and aiohttp refuse leading zeros,
            # aiohttp short forms): then it can reach neither server with it.
            for result in (genuine_result, rogue_result):
                assert result.startswith("client error"), (spelling, result)
                assert "ssl" not in result.lower(), (spelling, result)  # not a TLS failure
                assert "certificate" not in result.lower(), (spelling, result)
    assert bad.wait_idle() and bad.total_received() == b""
    assert accepted >= 2, f"{client.name} accepted almost no spelling: the test proves little"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.000.000.001:{port}/",
        "http://0x7f.1:{port}/",
        "http://2130706433:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://127.0.0.010:{port}/",  # refused outright: OpenSSL and the resolver disagree
    ],
)
def test_plain_http_to_a_spelled_pinned_address_is_refused(
    url: str, servers: tuple[TLSServer, TLSServer, Path], policy: certpin.Policy
) -> None:
    good, _bad, cafile = servers
    with pinned_session(policy, cafile=cafile) as session:
        with pytest.raises(InsecureRequestError, match="refusing plain http:// request"):
            session.get(url.format(port=good.port), timeout=5)
    assert good.wait_idle() and good.handshakes == 0 and good.total_received() == b""


def test_plain_http_to_another_address_is_not_refused(policy: certpin.Policy) -> None:
    # The twin: 127.0.0.2 is another host; the request goes out (nothing listens on port 9).
    with pinned_session(policy) as session, pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.2:9/", timeout=2)


def _get(ctx: Any, host: str, port: int) -> int:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.usefixtures("resolver_takes_trailing_dots")
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_tofu_knows_an_address_by_every_spelling(
    spelling: str, servers: tuple[TLSServer, TLSServer, Path], tmp_path: Path
) -> None:
    # A new spelling used to be a new store key: a first use, and the rogue key was recorded.
    good, bad, cafile = servers
    store = certpin.dynamic.KnownPins(tmp_path / "known.json")
    ctx = store.create_default_context(cafile=cafile)
    assert _get(ctx, "127.0.0.1", good.port) == 200  # first use
    host = spelling.strip("[]")
    with pytest.raises(certpin.PinValidationError) as err:
        _get(ctx, host, bad.port)
    assert err.value.verdict is not None
    assert err.value.verdict.status is certpin.VerdictStatus.TOFU_MISMATCH
    with pytest.raises(certpin.PinValidationError):  # and on asyncio, which has no peer port
        asyncio.run(asyncio_get(f"https://127.0.0.1:{bad.port}/", ctx, server_hostname=host))
    assert _get(ctx, host, good.port) == 200  # the twin: the recorded key, spelled this way
    assert [e.key for e in store.entries()] == ["127.0.0.1"]
