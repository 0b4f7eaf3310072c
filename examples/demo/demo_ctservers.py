"""Loopback CT log servers over a `demo_ctlog.TestLog`, on the standard library's HTTP server
(shared by the demo and the CT tests, like `demo_ctlog`).

`RFC6962Server`: ``/ct/v1/`` get-sth, get-sth-consistency, get-proof-by-hash, get-entries,
get-roots, add-chain, add-pre-chain (RFC 6962 §4). `TiledServer`: static-ct-api ``checkpoint``,
``tile/<L>/<N>[.p/<W>]``, ``tile/data/<N>[.p/<W>]``, ``issuer/<fingerprint>``. Both keep
connections alive (HTTP/1.1) and count requests per path kind.
"""

from __future__ import annotations

import base64
import binascii
import collections
import gzip
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from demo_ctlog import TestLog

_TILE = re.compile(
    r"/tile/(?P<level>[0-5]|data)/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]*))?"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request (the kill -9 tests): nothing to report


class _Base:
    """A log server in a background thread; use as a context manager."""

    def __init__(self, log: TestLog, host: str = "127.0.0.1") -> None:
        self.log = log
        self.requests: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        #: how many entries one get-entries answer holds at most (real logs cap it too)
        self.max_entries = 1000
        #: gzip the data tiles (static-ct-api lets logs do so without negotiation)
        self.gzip = False
        #: answer 404 for partial tiles (a log that already has the full tile)
        self.no_partial = False
        #: seconds to wait before answering each request (a slow log, for the kill tests)
        self.delay = 0.0
        handler = self._handler()
        self.httpd = _Server((host, 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if server.delay:
                    time.sleep(server.delay)
                try:
                    status, payload, ctype = server.route(
                        method, parts.path, parse_qs(parts.query), body
                    )
                except (KeyError, ValueError, IndexError, binascii.Error) as exc:
                    status, payload, ctype = 400, str(exc).encode(), "text/plain"
                encoding = None
                if ctype == "application/octet-stream+gzip":
                    ctype, encoding = "application/octet-stream", "gzip"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler

    def count(self, kind: str) -> None:
        with self.lock:
            self.requests[kind] += 1


def _json(data: object) -> tuple[int, bytes, str]:
    return 200, json.dumps(data).encode(), "application/json"


class RFC6962Server(_Base):
    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str]:
        log = self.log
        name = path.removeprefix("/ct/v1/")
        self.count(name)
        q = {k: v[0] for k, v in query.items()}
        if method == "GET" and name == "get-sth":
            return _json(log.sth())
        if method == "GET" and name == "get-sth-consistency":
            first, second = int(q["first"]), int(q["second"])
            if not 0 < first <= second <= log.size:
                return 400, b"bad range", "text/plain"
            proof = log.consistency(first, second)
            return _json({"consistency": [base64.b64encode(p).decode() for p in proof]})
        if method == "GET" and name == "get-proof-by-hash":
            wanted = base64.b64decode(q["hash"])
            size = int(q["tree_size"])
            for index in range(size):
                if log.node(0, index) == wanted:
                    path_ = log.inclusion(index, size)
                    return _json(
                        {
                            "leaf_index": index,
                            "audit_path": [base64.b64encode(p).decode() for p in path_],
                        }
                    )
            return 404, b"no such leaf", "text/plain"
        if method == "GET" and name == "get-entries":
            start, end = int(q["start"]), int(q["end"])
            available = len(log.entries)
            if start < 0 or end < start or start >= available:
                return 400, b"bad range", "text/plain"
            end = min(end + 1, available, start + self.max_entries)
            return 200, log.entries_json(start, end), "application/json"
        if method == "GET" and name == "get-roots":
            return _json({"certificates": [base64.b64encode(r).decode() for r in log.roots]})
        if method == "POST" and name in ("add-chain", "add-pre-chain"):
            chain = [base64.b64decode(c, validate=True) for c in json.loads(body)["chain"]]
            issuers = chain[1:]
            if name == "add-chain":
                index = log.add_x509(chain[0], issuers)
            else:
                index = log.add_precert(chain[0], issuers)
            sct = log.sct_json(index)
            return _json(sct)
        return 404, b"not found", "text/plain"


def _tile_index(text: str) -> int:
    return int("".join(part.lstrip("x") for part in text.split("/")))


class TiledServer(_Base):
    #: add a witness cosignature line (by a key nobody configured) to every checkpoint
    witness = False

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str]:
        log = self.log
        if method != "GET":
            return 405, b"", "text/plain"
        if path == "/checkpoint":
            self.count("checkpoint")
            return 200, log.checkpoint(witness=self.witness), "text/plain; charset=utf-8"
        if path.startswith("/issuer/"):
            self.count("issuer")
            cert = log.issuer(path.removeprefix("/issuer/"))
            return (200, cert, "application/pkix-cert") if cert else (404, b"", "text/plain")
        match = _TILE.fullmatch(path)
        if match is None:
            return 404, b"not found", "text/plain"
        index = _tile_index(match["index"])
        width = int(match["width"] or 256)
        level = 0 if match["level"] == "data" else int(match["level"])
        available = len(log.entries) >> (8 * level)  # hashes (or entries) at this level
        if width > 256 or index * 256 + width > available:
            return 404, b"", "text/plain"
        if match["width"] and self.no_partial and (index + 1) * 256 <= available:
            return 404, b"", "text/plain"  # the full tile exists: the partial one is gone
        if match["level"] == "data":
            self.count("data")
            data = log.data_tile(index, width)
            if self.gzip:
                return 200, gzip.compress(data), "application/octet-stream+gzip"
            return 200, data, "application/octet-stream"
        self.count("tile")
        return 200, log.hash_tile(level, index, width), "application/octet-stream"
