"""`certpin bundle serve`: only the directory's own, non-hidden files; If-None-Match incl. `*`."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpin.dynamic.serve import make_server, serve_in_thread


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    www = tmp_path / "www"
    www.mkdir()
    (www / "bundle.jws").write_text("e30.e30.sig")
    (www / ".lock").write_text("")
    (www / ".git").mkdir()
    (www / ".git" / "config").write_text("[core]")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", www / "escape.txt")
    os.symlink(tmp_path, www / "up")
    os.symlink(www / "bundle.jws", www / "alias.jws")  # stays inside: served
    server = make_server(www, quiet=True)
    thread = serve_in_thread(server)
    try:
        yield www, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fetch(port: int, path: str, **headers: str) -> tuple[int, bytes, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("ETag")
    finally:
        conn.close()


def test_serves_files_and_in_directory_symlinks(site: tuple[Path, int]) -> None:
    _, port = site
    assert fetch(port, "/bundle.jws")[:2] == (200, b"e30.e30.sig")
    assert fetch(port, "/alias.jws")[:2] == (200, b"e30.e30.sig")


@pytest.mark.parametrize(
    "path", ["/escape.txt", "/up/secret.txt", "/.lock", "/.git/config", "/", "/missing.jws"]
)
def test_refuses_escapes_dotfiles_and_directories(site: tuple[Path, int], path: str) -> None:
    status, body, _ = fetch(site[1], path)
    assert status == 404 and b"outside" not in body and b"[core]" not in body


def test_if_none_match(site: tuple[Path, int]) -> None:
    _, port = site
    status, _, etag = fetch(port, "/bundle.jws")
    assert status == 200 and etag
    assert fetch(port, "/bundle.jws", **{"If-None-Match": etag})[0] == 304
    assert fetch(port, "/bundle.jws", **{"If-None-Match": f'"other", {etag}'})[0] == 304
    assert fetch(port, "/bundle.jws", **{"If-None-Match": "*"})[0] == 304
    assert fetch(port, "/bundle.jws", **{"If-None-Match": '"other"'})[0] == 200
    assert fetch(port, "/missing.jws", **{"If-None-Match": "*"})[0] == 404
