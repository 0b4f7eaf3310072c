"""``GET /bundles/…`` serves bundle files only (issue item 9): never a dotfile (``.git/config``,
``.lock``), however the path is spelled (``%2e``, ``//``, ``\\``, ``..``), nor a file reached
through a symlink that leaves the directory or lands on a dotfile. Requests go byte-exact over a
socket to the real server (an HTTP client would normalise the odd paths away before sending);
the rule itself, `certpin.dynamic.files.bundle_file`, is also checked on its own."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpin.dynamic.files import bundle_file, bundle_file_for_target
from collector._helpers import CollectorServer

SECRET = "not-for-the-network"
BUNDLE = "header.payload.signature"


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    """A bundle directory with what real ones collect besides bundles."""
    root = tmp_path / "bundles"
    (root / "sub").mkdir(parents=True)
    (root / "pins.jws").write_text(BUNDLE)
    (root / "sub" / "app.jws").write_text(BUNDLE)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text(SECRET)
    (root / ".lock").write_text(SECRET)
    (root / "sub" / ".hidden").write_text(SECRET)
    (root / "a\\b.jws").write_text(SECRET)  # a separator on Windows: never a bundle name
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "escape.jws").symlink_to(outside / "secret.txt")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    (root / "alias.jws").symlink_to(root / ".git" / "config")  # inside, but a dotfile
    (root / "loop.jws").symlink_to(root / "loop.jws")
    os.mkfifo(root / "fifo.jws")  # not a regular file: reading it would block
    (root / "same.jws").symlink_to(root / "pins.jws")  # inside, a bundle file: served
    return root


#: Request targets (raw, as sent) that must be 404 with nothing served.
REFUSED = [
    "/bundles/.git/config",
    "/bundles/.lock",
    "/bundles/sub/.hidden",
    "/bundles/%2egit/config",
    "/bundles/%2Elock",
    "/bundles/sub/%2ehidden",
    "/bundles/%2e%2e/outside/secret.txt",
    "/bundles//.lock",
    "/bundles/.git//config",
    "/bundles/sub//.hidden",
    "/bundles//pins.jws",
    "/bundles/sub/../.lock",
    "/bundles/sub/%2e%2e/.lock",
    "/bundles/sub%2f..%2f.lock",
    "/bundles/./.lock",
    "/bundles/./pins.jws",
    "/bundles/sub/../pins.jws",
    "/bundles/a%5Cb.jws",
    "/bundles/%5C.lock",
    "/bundles/sub%5C.hidden",
    "/bundles/pins.jws%00",
    "/bundles/escape.jws",
    "/bundles/elsewhere/secret.txt",
    "/bundles/alias.jws",
    "/bundles/loop.jws",
    "/bundles/fifo.jws",
    "/bundles/sub",
    "/bundles/sub/",
    "/bundles/",
    "/bundles/missing.jws",
    "/bundles/%ff.jws",
    "/bundles/" + "x" * 300,
]
#: …and their twins, served.
SERVED = ["/bundles/pins.jws", "/bundles/sub/app.jws", "/bundles/same.jws", "/bundles/pins%2Ejws"]


def _request(port: int, target: str, method: str = "GET") -> tuple[int, bytes]:
    """One request with `target` exactly as given; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture(params=["httptools", "h11"])
def server(
    bundles: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[CollectorServer]:
    db = str(tmp_path / "db.sqlite3")
    with CollectorServer(db, bundles_dir=bundles, rate_limit=None, http=request.param) as srv:
        yield srv


def test_only_bundle_files_are_served(server: CollectorServer) -> None:
    for target in REFUSED:
        for method in ("GET", "HEAD"):
            status, body = _request(server.port, target, method)
            assert status == 404 and SECRET.encode() not in body, (method, target, status, body)
    for target in SERVED:
        assert _request(server.port, target) == (200, BUNDLE.encode()), target
        assert _request(server.port, target, "HEAD") == (200, b""), target


def test_the_bundle_files_rule(bundles: Path) -> None:
    for target in REFUSED:
        path = target.removeprefix("/bundles")
        assert bundle_file_for_target(bundles, path + "?q=1") is None, target
    for target in SERVED:
        found = bundle_file_for_target(bundles, target.removeprefix("/bundles") + "#f")
        assert found is not None and found.read_text() == BUNDLE, target
    # Decoded paths, as an ASGI server hands them over; a leading "/" is optional.
    assert bundle_file(bundles, "sub/app.jws") == (bundles / "sub" / "app.jws").resolve()
    assert bundle_file(bundles, "/pins.jws") == (bundles / "pins.jws").resolve()
    for path in (".lock", "/.git/config", "sub/.hidden", "", "/", "a\\b.jws", "pins.jws\x00"):
        assert bundle_file(bundles, path) is None, path
    assert bundle_file(bundles.parent / "missing", "pins.jws") is None


def test_a_bundle_directory_that_is_itself_a_symlink(bundles: Path, tmp_path: Path) -> None:
    link = tmp_path / "published"
    link.symlink_to(bundles, target_is_directory=True)
    assert bundle_file(link, "pins.jws") == (bundles / "pins.jws").resolve()
    assert bundle_file(link, "alias.jws") is None


def test_bundle_serve_applies_the_same_rule(bundles: Path) -> None:
    # `certpin bundle serve` (make_server) answers the same targets the same way: one rule.
    from certpin.dynamic.serve import make_server, serve_in_thread

    srv = make_server(bundles, quiet=True)
    thread = serve_in_thread(srv)
    try:
        port = srv.server_address[1]
        for target in REFUSED:
            path = target.removeprefix("/bundles")
            if path == "//pins.jws":
                # http.server itself turns a leading "//" into "/" before any handler runs
                # (gh-87389, against open redirects): the harmless twin of a served bundle.
                continue
            for method in ("GET", "HEAD"):
                status, body = _request(port, path or "/", method)
                assert status == 404 and SECRET.encode() not in body, (method, path, status)
        for target in SERVED:
            path = target.removeprefix("/bundles")
            assert _request(port, path) == (200, BUNDLE.encode()), path
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)
