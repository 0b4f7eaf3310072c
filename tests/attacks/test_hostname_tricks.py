"""Host name spellings must not slip past a rule: case, trailing dot, IDN, wildcard depth.

A wrong pin is used to detect "pinned": a pinned connection is blocked by the pin check, an
unpinned one passes on CA validation alone. Names under ``.test`` resolve to 127.0.0.1
(`loopback_names`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest

import certpin
from _support.pki import PKI
from _support.servers import TLSServer
from tls._clients import Client, Handle, Pinning, exception_chain, find_in_chain
from tls._fixtures import Pins, policy_for

Opener = Callable[[Client, Pinning], Handle]
Outcome = Literal["pinned", "ca-rejected", "passed"]


def probe(client: Client, handle: Handle, url: str) -> Outcome:
    """What happened to one request to a server whose chain matches no pin of the policy."""
    try:
        handle.fetch(url)
    except Exception as exc:
        if find_in_chain(exc, certpin.PinValidationError) is not None:
            return "pinned"
        if find_in_chain(exc, ssl.SSLError) is not None:
            return "ca-rejected"
        # A websocket client that got through TLS fails on the HTTPS server's 200 instead of
        # 101: the TLS layer (and the pin check) let it pass.
        if client.kind == "ws":
            return "passed"
        raise AssertionError(
            f"{client}: unexpected error: {[repr(e) for e in exception_chain(exc)]}"
        ) from exc
    return "passed"


@pytest.fixture
def names_server(pki: PKI, tmp_path: Path) -> Iterator[TLSServer]:
    leaf = pki.intermediate.issue_leaf(
        "pinned.test", "xn--bcher-kva.test", "a.wild.test", "a.b.wild.test", "wild.test"
    )
    certfile, keyfile = leaf.write(tmp_path / "names")
    with TLSServer(certfile, keyfile) as srv:
        yield srv


def url(server: TLSServer, host: str) -> str:
    return f"https://{host}:{server.port}/"


@pytest.mark.usefixtures("loopback_names")
def test_upper_case_host_is_pinned(
    client: Client, open_client: Opener, names_server: TLSServer, tmp_pki_files, pins: Pins
) -> None:
    policy = policy_for("pinned.test", pins.other, pins.spare)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca))
    assert probe(client, handle, url(names_server, "PINNED.Test")) == "pinned"
    assert names_server.wait_idle() and names_server.total_received() == b""


@pytest.mark.usefixtures("loopback_names")
def test_upper_case_policy_key_matches(
    client: Client, open_client: Opener, names_server: TLSServer, tmp_pki_files, pins: Pins
) -> None:
    policy = policy_for("PINNED.TEST.", pins.other, pins.spare)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca))
    assert probe(client, handle, url(names_server, "pinned.test")) == "pinned"


# What each client does with a fully-qualified "pinned.test." (documented in
# docs/enforcement.md). Never "passed": a trailing dot must not dodge the rule.
TRAILING_DOT: dict[str, Outcome] = {}


@pytest.mark.usefixtures("loopback_names")
def test_trailing_dot_never_dodges_the_rule(
    client: Client, open_client: Opener, names_server: TLSServer, tmp_pki_files, pins: Pins
) -> None:
    policy = policy_for("pinned.test", pins.other, pins.spare)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca))
    outcome = probe(client, handle, url(names_server, "pinned.test."))
    TRAILING_DOT[client.name] = outcome
    assert outcome in ("pinned", "ca-rejected")
    assert names_server.wait_idle() and names_server.total_received() == b""


@pytest.mark.usefixtures("loopback_names")
@pytest.mark.parametrize("spelling", ["bücher.test", "xn--bcher-kva.test"])
@pytest.mark.parametrize("key", ["bücher.test", "xn--bcher-kva.test"])
def test_idn_u_label_and_a_label_are_one_rule(
    client: Client,
    open_client: Opener,
    names_server: TLSServer,
    tmp_pki_files,
    pins: Pins,
    key: str,
    spelling: str,
) -> None:
    if client.name == "http.client" and not spelling.isascii():
        pytest.skip("http.client sends the Host header in ASCII: it needs the A-label")
    wrong = policy_for(key, pins.other, pins.spare)
    handle = open_client(client, Pinning(wrong, tmp_pki_files.root_ca))
    assert probe(client, handle, url(names_server, spelling)) == "pinned"
    assert names_server.wait_idle() and names_server.total_received() == b""
    if client.kind == "http":
        good = policy_for(key, pins.intermediate, pins.spare)
        assert open_client(client, Pinning(good, tmp_pki_files.root_ca)).fetch(
            url(names_server, spelling)
        )


# host -> pinned? under each pattern (OkHttp: "*." is exactly one label, "**." zero or more).
WILDCARDS: dict[str, dict[str, bool]] = {
    "*.wild.test": {"a.wild.test": True, "a.b.wild.test": False, "wild.test": False},
    "**.wild.test": {"a.wild.test": True, "a.b.wild.test": True, "wild.test": True},
}


@pytest.mark.usefixtures("loopback_names")
@pytest.mark.parametrize("pattern", sorted(WILDCARDS))
def test_wildcard_depth(
    client: Client,
    open_client: Opener,
    names_server: TLSServer,
    tmp_pki_files,
    pins: Pins,
    pattern: str,
) -> None:
    policy = policy_for(pattern, pins.other, pins.spare)
    handle = open_client(client, Pinning(policy, tmp_pki_files.root_ca))
    seen = {host: probe(client, handle, url(names_server, host)) for host in WILDCARDS[pattern]}
    expected = {h: "pinned" if p else "passed" for h, p in WILDCARDS[pattern].items()}
    assert seen == expected
