"""`certpin bundle serve DIR`: static bundle hosting with strong ETags, for tests and small
deployments (any static host or CDN works as well: bundles are signed, the host is not trusted
with their content, only pinned so that a network attacker cannot even withhold them silently).
"""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
from functools import partial
from pathlib import Path
from typing import Any

from certpin.dynamic.files import bundle_file_for_target

__all__ = ["BundleHandler", "make_server"]


class BundleHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the bundle files of one directory (GET/HEAD) with ``ETag`` = SHA-256 of the
    content and ``If-None-Match`` → 304 (a listed ETag or ``*``). Which files are bundle files
    is `certpin.dynamic.files`' rule, shared with the collector's ``/bundles/``: no directory
    listings, no dotfiles (``.lock``, ``.git``…), no symlink out of the directory — all 404."""

    server_version = "certpin-bundle-serve"

    def list_directory(self, path: str | Path) -> None:  # type: ignore[override]
        self.send_error(404, "no directory listings")
        return None

    def send_head(self) -> Any:
        path = bundle_file_for_target(self.directory, self.path)
        if path is None:
            self.send_error(404, "not found")
            return None
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        match = self.headers.get("If-None-Match")
        tags = [] if match is None else [m.strip() for m in match.split(",")]
        if "*" in tags or etag in tags:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return None
        self.send_response(200)
        ctype = "application/jose" if path.suffix == ".jws" else self.guess_type(str(path))
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        import io

        return io.BytesIO(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if isinstance(self.server, _Server) and self.server.quiet:
            return
        super().log_message(format, *args)


class _Server(http.server.ThreadingHTTPServer):
    quiet = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that aborts the TLS handshake (e.g. a pin mismatch) is not a server bug.
        if not self.quiet:
            super().handle_error(request, client_address)


def make_server(
    directory: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    quiet: bool = False,
) -> http.server.ThreadingHTTPServer:
    """A threaded HTTP(S) server for `directory` (not started: call ``serve_forever``)."""
    handler = partial(BundleHandler, directory=str(directory))
    server = _Server((host, port), handler)
    server.daemon_threads = True
    server.quiet = quiet
    if certfile is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    return server


def serve_in_thread(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return thread
