"""Fixtures shared by tests/tls and tests/attacks: the client table, pins, policies, recorders.

Both directories' conftest.py star-import this module so pytest registers the fixtures.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import certpin
from _support.pki import PKI, PKIFiles, make_key, spki_pin
from _support.servers import TLSServer, WebSocketTLSServer
from tls._clients import CLIENTS, Client, Handle, Pinning


@pytest.fixture(params=CLIENTS, ids=str)
def client(request: pytest.FixtureRequest) -> Client:
    """Every TLS client of the table, in turn."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def open_client() -> Iterator[Callable[[Client, Pinning], Handle]]:
    """``open_client(client, pinning) -> Handle``; handles are closed at teardown."""
    handles: list[Handle] = []

    def opener(client: Client, pinning: Pinning) -> Handle:
        handle = client.open(pinning)
        handles.append(handle)
        return handle

    yield opener
    for handle in handles:
        handle.close()


@dataclass
class Recorder:
    """An ``on_failure`` callback that remembers every PinFailure."""

    failures: list[certpin.PinFailure] = field(default_factory=list)

    def __call__(self, failure: certpin.PinFailure) -> None:
        self.failures.append(failure)

    @property
    def count(self) -> int:
        return len(self.failures)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@dataclass(frozen=True)
class Pins:
    leaf: str
    intermediate: str
    root: str
    spare: str  # a key no certificate uses: the backup pin
    other: str  # another unrelated key: a wrong pin


@pytest.fixture
def pins(pki: PKI) -> Pins:
    return Pins(
        leaf=spki_pin(pki.leaf),
        intermediate=spki_pin(pki.intermediate),
        root=spki_pin(pki.root),
        spare=spki_pin(make_key("p256")),
        other=spki_pin(make_key("p256")),
    )


def policy_for(host: str = "localhost", *pin_list: str, **rule: Any) -> certpin.Policy:
    """A one-rule policy; ``unpinned_hosts`` may be given as a keyword."""
    unpinned = rule.pop("unpinned_hosts", "allow")
    return certpin.Policy.from_dict(
        {"unpinned_hosts": unpinned, "domains": {host: {"pins": list(pin_list), **rule}}}
    )


@pytest.fixture
def ws_server(tmp_pki_files: PKIFiles) -> Iterator[WebSocketTLSServer]:
    with WebSocketTLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as srv:
        yield srv


class Endpoint:
    """Where a client's *successful* requests go: an HTTPS server, or a wss:// echo server for
    websocket clients. ``expected`` is the body a successful fetch returns."""

    def __init__(self, client: Client, server: TLSServer, files: PKIFiles) -> None:
        self.client = client
        self.https = server
        self.files = files
        self._ws: WebSocketTLSServer | None = None

    @property
    def ws(self) -> WebSocketTLSServer:
        if self._ws is None:
            self._ws = WebSocketTLSServer(self.files.certfile, self.files.keyfile).start()
        return self._ws

    @property
    def port(self) -> int:
        return self.ws.port if self.client.kind == "ws" else self.https.port

    def url(self, hostname: str = "localhost") -> str:
        if self.client.kind == "ws":
            return self.ws.url(hostname)
        return self.https.url("/", hostname)

    @property
    def expected(self) -> bytes:
        from _support.servers import DEFAULT_BODY
        from tls._clients import WS_MESSAGE

        return WS_MESSAGE.encode() if self.client.kind == "ws" else DEFAULT_BODY

    def close(self) -> None:
        if self._ws is not None:
            self._ws.stop()


@pytest.fixture
def endpoint(client: Client, server: TLSServer, tmp_pki_files: PKIFiles) -> Iterator[Endpoint]:
    ep = Endpoint(client, server, tmp_pki_files)
    yield ep
    ep.close()


_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def loopback_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve every ``*.test`` name to 127.0.0.1 (all clients resolve via socket.getaddrinfo:
    aiohttp's default ThreadedResolver and asyncio's loop.getaddrinfo included)."""

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.rstrip(".").lower().endswith(".test"):
            host = "127.0.0.1"
        return _real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
