"""The edges' keep-alive reader (`certpin._io.http.Session`, what the CT watcher reads logs
with): one connection per origin and thread, reused; the body bound holds before and after
inflating gzip; the caller's pinned context; proxies from the environment. Real loopback
servers throughout."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from unittest import mock

import pytest

import certpin
from _support.pki import PKIFiles
from _support.servers import LoopbackHTTPServer, TLSServer
from certpin._io import http
from tls._clients import find_in_chain
from tls._fixtures import Pins, policy_for

ANSWERS: dict[str, tuple[dict[str, str], bytes]] = {
    "/ok": ({}, b"hello"),
    "/big": ({}, b"x" * 101),
    "/gzip": ({"Content-Encoding": "gzip"}, gzip.compress(b"hello")),
    "/bomb": ({"Content-Encoding": "gzip"}, gzip.compress(b"\0" * 10_000)),
    "/badgzip": ({"Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip"),
    "/cut": ({"Content-Encoding": "gzip"}, gzip.compress(b"hello")[:-6]),
    "/trailing": ({"Content-Encoding": "gzip"}, gzip.compress(b"hello") + b"junk"),
    "/br": ({"Content-Encoding": "br"}, b"..."),
}


class _Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: list[str] = []
    lines: list[str] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(self.client_address[0])

    def do_GET(self) -> None:
        self.lines.append(self.requestline)
        path = self.path.removeprefix("http://origin.invalid")
        headers, body = ANSWERS.get(path, ({}, b"via " + path.encode()))
        self.send_response(200)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        if self.headers.get("Proxy-Authorization"):
            self.send_header("X-Proxy-Auth", self.headers["Proxy-Authorization"])
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[str]:
    _Origin.connections = []
    _Origin.lines = []
    with LoopbackHTTPServer(_Origin) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture
def session() -> Iterator[http.Session]:
    s = http.Session(context=None, timeout=5, headers={"User-Agent": "certpin-test"})
    yield s
    s.close()


def test_answers_come_over_one_kept_alive_connection(origin: str, session: http.Session) -> None:
    for path in ("/ok", "/gzip", "/ok"):
        response = session.get(origin + path, max_body=100)
        assert (response.status, response.body, response.truncated) == (200, b"hello", False)
    assert len(_Origin.connections) == 1
    session.close()
    assert session.get(origin + "/ok", max_body=100).body == b"hello"
    assert len(_Origin.connections) == 2  # closed means closed: a new connection after it


@pytest.mark.parametrize("path", ["/big", "/bomb"])
def test_a_body_over_the_bound_is_cut_and_its_connection_dropped(
    origin: str, session: http.Session, path: str
) -> None:
    response = session.get(origin + path, max_body=100)
    assert response.truncated and len(response.body) <= 100
    # The unread rest cannot be taken for the next answer: that one comes on a new connection.
    assert session.get(origin + "/ok", max_body=100).body == b"hello"
    assert len(_Origin.connections) == 2


def test_within_the_bound_is_whole(origin: str, session: http.Session) -> None:
    response = session.get(origin + "/bomb", max_body=10_000)
    assert (response.body, response.truncated) == (b"\0" * 10_000, False)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/badgzip", "bad gzip body"),
        ("/cut", "truncated gzip body"),
        ("/trailing", "bytes after it"),
        ("/br", "unsupported Content-Encoding 'br'"),
    ],
)
def test_a_body_that_cannot_be_read_is_an_error(
    origin: str, session: http.Session, path: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        session.get(origin + path, max_body=100)
    assert session.get(origin + "/ok", max_body=100).body == b"hello"  # still usable


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://localhost:1/", "needs the caller's TLS context"),
        ("ftp://localhost/x", "only https:// and http://"),
        ("http:///x", "only https:// and http://"),
    ],
)
def test_urls_it_does_not_send_to(session: http.Session, url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        session.get(url, max_body=1)


def test_a_plain_request_goes_to_the_environments_proxy(origin: str) -> None:
    proxy = origin.replace("http://", "http://user:p%40ss@")
    session = http.Session(context=None, timeout=5)
    try:
        with mock.patch.dict(os.environ, {"http_proxy": proxy, "no_proxy": ""}):
            response = session.get("http://origin.invalid/x?y=1", max_body=100)
    finally:
        session.close()
    assert response.body == b"via /x?y=1"
    assert _Origin.lines == ["GET http://origin.invalid/x?y=1 HTTP/1.1"]  # absolute form
    assert response.headers["X-Proxy-Auth"] == "Basic dXNlcjpwQHNz"  # user:p@ss


def test_no_proxy_sends_directly(origin: str) -> None:
    session = http.Session(context=None, timeout=5)
    try:
        with (
            mock.patch.dict(os.environ, {"http_proxy": origin, "no_proxy": "origin.invalid"}),
            pytest.raises(http.ERRORS),
        ):
            session.get("http://origin.invalid/x", max_body=100)  # no such host: not proxied
    finally:
        session.close()
    assert _Origin.lines == []


def test_a_pinned_https_read_gets_the_answer(tmp_pki_files: PKIFiles, pins: Pins) -> None:
    body = b"tile"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" + body
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile, response=answer) as srv:
        ctx = certpin.create_default_context(
            policy_for("localhost", pins.intermediate, pins.spare), cafile=tmp_pki_files.root_ca
        )
        session = http.Session(context=ctx, timeout=5)
        try:
            first = session.get(srv.url("/a"), max_body=100)
        finally:
            session.close()
    assert (first.status, first.body) == (200, body)
    assert srv.handshakes == 1


def test_wrong_pins_fail_before_a_byte_is_sent(tmp_pki_files: PKIFiles, pins: Pins) -> None:
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as srv:
        ctx = certpin.create_default_context(
            policy_for("localhost", pins.other, pins.spare), cafile=tmp_pki_files.root_ca
        )
        session = http.Session(context=ctx, timeout=5)
        try:
            with pytest.raises(http.ERRORS) as err:
                session.get(srv.url("/secret?token=1"), max_body=100)
        finally:
            session.close()
        assert find_in_chain(err.value, certpin.PinValidationError) is not None, repr(err.value)
        assert srv.wait_idle() and srv.total_received() == b""
