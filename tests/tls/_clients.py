"""One adapter per TLS client, so every enforcement scenario runs against every client.

A `Client` opens a `Handle` from a `Pinning` configuration (policy, trust anchors, on_failure,
clock); ``handle.fetch(url)`` makes one request and returns the body, raising whatever the client
raises on error. A handle is built once and may fetch many times (the policy-provider test relies
on that: the client is never rebuilt). Async clients keep one event loop per handle
(`asyncio.Runner`), so their client objects (httpx.AsyncClient, aiohttp.ClientSession) live
across fetches too.

Imported by tests/tls and tests/attacks as ``tls._clients`` (tests/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

import certpin

WS_MESSAGE = "certpin says hi"


@dataclass
class Pinning:
    """What a pinned client is configured with; every adapter builds its client from this."""

    policy: Any
    cafile: Path | str
    on_failure: Callable[[certpin.PinFailure], None] | None = None
    clock: Callable[[], Any] | None = None
    _ctx: certpin.PinningContext | None = field(default=None, repr=False)

    def context(self) -> certpin.PinningContext:
        """One context per configuration (urllib3 mutates contexts; never share across)."""
        if self._ctx is None:
            self._ctx = certpin.create_default_context(
                self.policy,
                cafile=str(self.cafile),
                on_failure=self.on_failure,
                clock=self.clock,
            )
        return self._ctx

    def adapter_kwargs(self) -> dict[str, Any]:
        return {
            "cafile": str(self.cafile),
            "on_failure": self.on_failure,
            "clock": self.clock,
        }


class Handle:
    """A client instance: ``fetch(url) -> body``; ``close()`` when done."""

    def fetch(self, url: str) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Client:
    name: str
    kind: Literal["http", "ws"]
    opener: Callable[[Pinning], Handle]
    #: the optional packages the client needs: its tests skip, saying which, where one is absent.
    requires: tuple[str, ...] = ()
    #: True when the TLS object is an SSLObject (memory BIO): PinFailure.port may be None.
    asyncio_based: bool = False
    #: how many handshakes one failed fetch makes with the client's default retry settings.
    retries_handshakes: int = 1

    def open(self, pinning: Pinning) -> Handle:
        for module in self.requires:
            pytest.importorskip(module, reason=f"{self.name} needs {module}")
        return self.opener(pinning)

    def __str__(self) -> str:
        return self.name


def _wss(url: str) -> str:
    """Websocket clients fetch an ``https://`` URL as ``wss://`` on the same host and port, so
    failure scenarios can aim every client at the same byte-recording HTTPS server."""
    return "wss://" + url.split("://", 1)[1] if url.startswith("https://") else url


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port, path


class _Sync(Handle):
    def __init__(self, fetch: Callable[[str], bytes], close: Callable[[], None] = lambda: None):
        self._fetch = fetch
        self._close = close

    def fetch(self, url: str) -> bytes:
        return self._fetch(url)

    def close(self) -> None:
        self._close()


class _Async(Handle):
    """Runs coroutines on one long-lived event loop."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.client: Any = None

    async def _afetch(self, url: str) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    async def _aclose(self) -> None:
        pass

    def fetch(self, url: str) -> bytes:
        return self.runner.run(asyncio.wait_for(self._afetch(url), 15))

    def close(self) -> None:
        try:
            self.runner.run(self._aclose())
        finally:
            self.runner.close()


# -- blocking clients (SSLSocket) -----------------------------------------------------------------


def _open_http_client(p: Pinning) -> Handle:
    ctx = p.context()

    def fetch(url: str) -> bytes:
        host, port, path = _split(url)
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            return body
        finally:
            conn.close()

    return _Sync(fetch)


def _open_urllib(p: Pinning) -> Handle:
    ctx = p.context()

    def fetch(url: str) -> bytes:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            return resp.read()  # type: ignore[no-any-return]

    return _Sync(fetch)


def _open_urllib3(p: Pinning) -> Handle:
    import urllib3

    # Default retries (Retry(3)): a pin failure is retried; see test_retries_*.
    pool = urllib3.PoolManager(ssl_context=p.context(), timeout=10)

    def fetch(url: str) -> bytes:
        resp = pool.request("GET", url)
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        return resp.data

    return _Sync(fetch, pool.clear)


def _open_requests_adapter(p: Pinning) -> Handle:
    import requests

    from certpin.requests import PinningAdapter

    session = requests.Session()
    adapter = PinningAdapter(p.policy, **p.adapter_kwargs())
    session.mount("https://", adapter)
    session.mount("http://", adapter)

    def fetch(url: str) -> bytes:
        resp = session.get(url, timeout=10)
        resp.raise_for_status()
        return resp.content

    return _Sync(fetch, session.close)


def _open_pinned_session(p: Pinning) -> Handle:
    from certpin.requests import pinned_session

    session = pinned_session(p.policy, **p.adapter_kwargs())

    def fetch(url: str) -> bytes:
        resp = session.get(url, timeout=10)
        resp.raise_for_status()
        return resp.content  # type: ignore[no-any-return]

    return _Sync(fetch, session.close)


def _open_httpx(p: Pinning) -> Handle:
    import httpx

    client = httpx.Client(verify=p.context(), timeout=10)

    def fetch(url: str) -> bytes:
        resp = client.get(url)
        resp.raise_for_status()
        return resp.content

    return _Sync(fetch, client.close)


def _open_websockets_sync(p: Pinning) -> Handle:
    from websockets.sync.client import connect

    ctx = p.context()

    def fetch(url: str) -> bytes:
        with connect(_wss(url), ssl=ctx, open_timeout=10, close_timeout=2) as ws:
            ws.send(WS_MESSAGE)
            reply = ws.recv(timeout=10)
        return reply.encode() if isinstance(reply, str) else reply

    return _Sync(fetch)


# -- asyncio clients (SSLObject) ------------------------------------------------------------------


class _HttpxAsync(_Async):
    def __init__(self, p: Pinning) -> None:
        super().__init__()
        self.ctx = p.context()

    async def _afetch(self, url: str) -> bytes:
        import httpx

        if self.client is None:
            self.client = httpx.AsyncClient(verify=self.ctx, timeout=10)
        resp = await self.client.get(url)
        resp.raise_for_status()
        return resp.content  # type: ignore[no-any-return]

    async def _aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


class _Aiohttp(_Async):
    def __init__(self, p: Pinning) -> None:
        super().__init__()
        self.ctx = p.context()

    async def _afetch(self, url: str) -> bytes:
        import aiohttp

        if self.client is None:
            self.client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self.client.get(url, ssl=self.ctx) as resp:
            resp.raise_for_status()
            return await resp.read()  # type: ignore[no-any-return]

    async def _aclose(self) -> None:
        if self.client is not None:
            await self.client.close()


class _WebsocketsAsync(_Async):
    def __init__(self, p: Pinning) -> None:
        super().__init__()
        self.ctx = p.context()

    async def _afetch(self, url: str) -> bytes:
        from websockets.asyncio.client import connect

        async with connect(_wss(url), ssl=self.ctx, open_timeout=10, close_timeout=2) as ws:
            await ws.send(WS_MESSAGE)
            reply = await ws.recv()
        return reply.encode() if isinstance(reply, str) else reply


async def asyncio_get(
    url: str, ctx: ssl.SSLContext, *, server_hostname: str | None = None
) -> bytes:
    """A raw HTTP/1.1 GET over `asyncio.open_connection` (connects to 127.0.0.1)."""
    host, port, path = _split(url)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=server_hostname or host
    )
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"bad response: {head[:40]!r}")
    return body


class _AsyncioStreams(_Async):
    def __init__(self, p: Pinning) -> None:
        super().__init__()
        self.ctx = p.context()

    async def _afetch(self, url: str) -> bytes:
        return await asyncio_get(url, self.ctx)


CLIENTS: tuple[Client, ...] = (
    Client("http.client", "http", _open_http_client),
    Client("urllib.request", "http", _open_urllib),
    Client("urllib3", "http", _open_urllib3, ("urllib3",), retries_handshakes=4),
    Client("requests-adapter", "http", _open_requests_adapter, ("requests",)),
    Client("requests-pinned_session", "http", _open_pinned_session, ("requests",)),
    Client("httpx-sync", "http", _open_httpx, ("httpx",)),
    Client("httpx-async", "http", _HttpxAsync, ("httpx",), asyncio_based=True),
    Client("aiohttp", "http", _Aiohttp, ("aiohttp",), asyncio_based=True),
    Client("websockets-sync", "ws", _open_websockets_sync, ("websockets",)),
    Client("websockets-async", "ws", _WebsocketsAsync, ("websockets",), asyncio_based=True),
    Client("asyncio-streams", "http", _AsyncioStreams, asyncio_based=True),
)
CLIENT_NAMES = tuple(c.name for c in CLIENTS)
HTTP_CLIENTS = tuple(c for c in CLIENTS if c.kind == "http")


def client_by_name(name: str) -> Client:
    return next(c for c in CLIENTS if c.name == name)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception reachable from `exc` through __cause__, __context__, args and the
    attributes clients wrap errors in (URLError.reason, aiohttp's os_error/certificate_error,
    ExceptionGroup.exceptions)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, *item.args]
        for attr in ("reason", "os_error", "certificate_error", "exceptions"):
            value = getattr(item, attr, None)
            if isinstance(value, list | tuple):
                todo += list(value)
            else:
                todo.append(value)


def find_in_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    return next((e for e in exception_chain(exc) if isinstance(e, kind)), None)


def fetch_error(handle: Handle, url: str) -> BaseException:
    """Fetch and return the exception the client raised (fails if none was raised)."""
    try:
        handle.fetch(url)
    except Exception as exc:  # the point: whatever the client wraps the TLS error in
        return exc
    raise AssertionError(f"fetch({url}) succeeded but was expected to fail")
