"""The edges' one HTTP client (`certpin._io.http`): bundle fetches, report uploads and monitor
webhooks rest on it, so its guarantees are checked here against real loopback servers: the
caller's pinned context, no redirects, the body cap, the overall deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

import certpin
from _support.pki import PKIFiles
from _support.servers import DEFAULT_BODY, TLSServer
from certpin._io import http
from tls._clients import find_in_chain
from tls._fixtures import Pins, policy_for


def _response(status: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _get(url: str, ctx: certpin.PinningContext, **options: object) -> http.Response:
    kwargs: dict[str, object] = {"timeout": 10, "max_body": 1 << 20, **options}
    return http.request(url, context=ctx, **kwargs)  # type: ignore[arg-type]


def test_a_pinned_request_gets_the_answer(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    ctx = certpin.create_default_context(
        policy_for("localhost", pins.intermediate, pins.spare), cafile=tmp_pki_files.root_ca
    )
    response = _get(server.url("/x"), ctx, headers={"User-Agent": "certpin-test"})
    assert (response.status, response.ok, response.body) == (200, True, DEFAULT_BODY)
    assert not response.truncated
    assert b"GET /x HTTP/1.1" in server.total_received()
    assert b"User-Agent: certpin-test" in server.total_received()


def test_wrong_pins_fail_before_a_byte_is_sent(
    server: TLSServer, tmp_pki_files: PKIFiles, pins: Pins
) -> None:
    ctx = certpin.create_default_context(
        policy_for("localhost", pins.other, pins.spare), cafile=tmp_pki_files.root_ca
    )
    with pytest.raises(http.ERRORS) as err:
        _get(server.url(), ctx, method="POST", body=b'{"secret": 1}')
    assert find_in_chain(err.value, certpin.PinValidationError) is not None, repr(err.value)
    assert server.wait_idle() and server.total_received() == b""


def test_a_redirect_is_an_answer_never_followed(
    tmp_pki_files: PKIFiles, server: TLSServer, pins: Pins
) -> None:
    elsewhere = server.url("/stolen")
    with TLSServer(
        tmp_pki_files.certfile,
        tmp_pki_files.keyfile,
        response=_response("302 Found", b"", f"Location: {elsewhere}"),
    ) as redirecting:
        ctx = certpin.create_default_context(
            policy_for("localhost", pins.intermediate, pins.spare), cafile=tmp_pki_files.root_ca
        )
        response = _get(redirecting.url(), ctx, method="POST", body=b"report")
    assert (response.status, response.reason, response.ok) == (302, "Found", False)
    assert response.headers["Location"] == elsewhere
    assert server.handshakes == 0  # the redirect target was never contacted


@pytest.mark.parametrize(("max_body", "truncated"), [(100, False), (99, True), (0, True)])
def test_the_body_is_capped(
    tmp_pki_files: PKIFiles, pins: Pins, max_body: int, truncated: bool
) -> None:
    body = bytes(range(100))
    with TLSServer(
        tmp_pki_files.certfile, tmp_pki_files.keyfile, response=_response("200 OK", body)
    ) as srv:
        ctx = certpin.create_default_context(
            policy_for("localhost", pins.intermediate, pins.spare), cafile=tmp_pki_files.root_ca
        )
        response = _get(srv.url(), ctx, max_body=max_body)
    assert response.truncated is truncated
    assert response.body == body[:max_body]


class _Drip:
    """Plain HTTP on loopback: the status line and headers at once, then one body byte per
    0.1 s (each read is quick, only the whole answer is slow)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
            for _ in range(20):
                if self.stop.wait(self.delay):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def slow() -> Iterator[_Drip]:
    drip = _Drip(0.1)
    yield drip
    drip.close()


@pytest.fixture
def quick() -> Iterator[_Drip]:
    drip = _Drip(0.0)
    yield drip
    drip.close()


def test_the_deadline_cuts_a_server_that_drips(slow: _Drip) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="within the 0.5 s deadline"):
        http.request(
            f"http://127.0.0.1:{slow.port}/", context=None, timeout=5, max_body=100, deadline=0.5
        )
    assert time.monotonic() - start < 1.5  # 20 bytes would take 2 s; each read only 0.1 s


def test_an_answer_within_the_deadline_is_read_whole(quick: _Drip) -> None:
    response = http.request(
        f"http://127.0.0.1:{quick.port}/", context=None, timeout=5, max_body=100, deadline=5
    )
    assert (response.status, response.body) == (200, b"x" * 20)


def test_https_without_the_callers_context_is_refused() -> None:
    # Never a default context: an upload to a pinned host must go through its pins.
    with pytest.raises(ValueError, match="needs the caller's TLS context"):
        http.request("https://localhost:1/", context=None, timeout=1, max_body=1)


@pytest.mark.parametrize("url", ["ftp://localhost/x", "file:///etc/passwd", "localhost:1/x"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="only https:// and http://"):
        http.request(url, context=None, timeout=1, max_body=1)
