"""The watcher's HTTP client is bounded (size, gzip) and keeps connections alive; tiled logs
may gzip their data tiles and drop partial tiles once the full ones exist."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from demo_ctlog import TestLog
from demo_ctservers import TiledServer

from certpin.lifecycle.ct.errors import LogError
from certpin.lifecycle.ct.http import HttpClient
from ct._certs import issuance
from ct.conftest import watch_once, write_log_list

ANSWERS = {
    "/ok": (200, {}, b"hello"),
    "/big": (200, {}, b"x" * 101),
    "/gzip": (200, {"Content-Encoding": "gzip"}, gzip.compress(b"hello")),
    "/bomb": (200, {"Content-Encoding": "gzip"}, gzip.compress(b"\0" * 10_000)),
    "/badgzip": (200, {"Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip"),
    "/cut": (200, {"Content-Encoding": "gzip"}, gzip.compress(b"hello")[:-6]),
    "/br": (200, {"Content-Encoding": "br"}, b"..."),
    "/missing": (404, {}, b""),
}


@pytest.fixture(scope="module")
def origin():
    connections: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(1)

        def do_GET(self) -> None:
            status, headers, body = ANSWERS[self.path]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", connections
    httpd.shutdown()
    httpd.server_close()


def test_answers_are_read_bounded_and_over_one_connection(origin):
    base, connections = origin
    before = len(connections)
    client = HttpClient(timeout=5)
    try:
        assert client.get(base + "/ok", 100) == (200, b"hello")
        assert client.get(base + "/gzip", 100) == (200, b"hello")
        assert client.get(base + "/missing", 100)[0] == 404
        assert client.get(base + "/ok", 100) == (200, b"hello")
        assert len(connections) - before == 1  # kept alive
    finally:
        client.close()


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/big", "larger than 100"),
        ("/bomb", "larger than 100 bytes once inflated"),
        ("/badgzip", "bad gzip"),
        ("/cut", "truncated gzip"),
        ("/br", "Content-Encoding"),
    ],
)
def test_what_breaks_a_bound_is_a_log_error(origin, path, problem):
    client = HttpClient(timeout=5)
    try:
        with pytest.raises(LogError, match=problem):
            client.get(origin[0] + path, 100)
    finally:
        client.close()


def test_an_unreachable_log_is_a_log_error():
    client = HttpClient(timeout=2)
    with pytest.raises(LogError, match="127.0.0.1:9/"):
        client.get("http://127.0.0.1:9/", 100)
    client.close()


@pytest.mark.parametrize(("gzipped", "no_partial"), [(True, False), (False, True), (False, False)])
def test_gzip_data_tiles_and_dropped_partial_tiles(
    capsys, world, policy, tmp_path, gzipped, no_partial
):
    state = str(tmp_path / "state")
    with TiledServer(TestLog(static=True)) as server:
        server.gzip = gzipped
        server.no_partial = no_partial
        for n in range(512):
            i = issuance(world.rogue, "api.example.com" if n in (5, 300) else f"h{n}.x.example")
            server.log.add_x509(i.final(), i.chain())
        # The checkpoint is at 300: tile 1 is partial (44 entries) in that tree, but its full
        # version exists, and a log may then have dropped the partial one.
        server.log.published = 300
        lst = write_log_list(tmp_path / "l.json", server)
        code, records, err = watch_once(
            capsys,
            str(policy),
            str(lst),
            "--state",
            state,
        )
        assert code == 1, err
        assert [r["index"] for r in records] == [5]
        server.log.published = None
        code, records, _ = watch_once(
            capsys,
            str(policy),
            str(lst),
            "--state",
            state,
            "--start-at",
            "end",
        )
        assert [r["index"] for r in records] == [300]
