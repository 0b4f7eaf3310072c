"""A real MITM: mitmproxy in reverse-proxy mode re-signs the genuine server's traffic with its own
CA, which the client trusts (as on a machine where an interception CA was installed).

mitmproxy 12 needs Python >= 3.12, so it lives in its own venv (``.venv-mitm``, built once with
``/root/.pyenv/versions/3.13.0/bin/python`` or ``$CERTPIN_MITM_PYTHON``; gitignored). The tests
skip, saying why, only if mitmproxy cannot be installed or started.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import certpin
from _support.pki import PKI, PKIFiles, make_key, make_pki, spki_pin, write_pki_files
from _support.servers import DEFAULT_BODY, TLSServer
from tls._clients import (
    CLIENTS,
    HTTP_CLIENTS,
    Client,
    Handle,
    Pinning,
    fetch_error,
    find_in_chain,
)
from tls._fixtures import Recorder, policy_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
MITM_VENV = REPO / ".venv-mitm"
MITM_PYTHON = os.environ.get("CERTPIN_MITM_PYTHON", "/root/.pyenv/versions/3.13.0/bin/python")


@pytest.fixture(scope="session")
def mitmdump() -> Path:
    """Path to mitmdump, installing mitmproxy into .venv-mitm on first use."""
    exe = MITM_VENV / "bin" / "mitmdump"
    if not exe.exists():
        if not Path(MITM_PYTHON).exists():
            pytest.skip(f"mitmproxy needs Python >= 3.12; {MITM_PYTHON} not found")
        try:
            subprocess.run(
                [MITM_PYTHON, "-m", "venv", str(MITM_VENV)], check=True, capture_output=True
            )
            subprocess.run(
                [str(MITM_VENV / "bin" / "pip"), "install", "-q", "mitmproxy"],
                check=True,
                capture_output=True,
                timeout=800,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            pytest.skip(f"cannot install mitmproxy: {exc} {detail[-500:]!r}")
    if not exe.exists():
        pytest.skip("mitmproxy installed but mitmdump not found")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mitm:
    port: int
    ca: Path  # mitmproxy's CA certificate (what the victim was made to trust)
    bundle: Path  # genuine root + mitmproxy CA
    upstream: TLSServer
    pki: PKI
    files: PKIFiles

    def url(self) -> str:
        return f"https://localhost:{self.port}/"


@pytest.fixture(scope="module")
def mitm(mitmdump: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitm]:
    base = tmp_path_factory.mktemp("mitm")
    pki = make_pki()
    files = write_pki_files(pki, base / "pki")
    confdir = base / "confdir"
    with TLSServer(files.certfile, files.keyfile) as upstream:
        proc: subprocess.Popen[bytes] | None = None
        log = (base / "mitmdump.log").open("wb")
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            proc = subprocess.Popen(
                [
                    str(mitmdump),
                    "--mode",
                    f"reverse:https://localhost:{upstream.port}",
                    "--listen-host",
                    "127.0.0.1",
                    "--listen-port",
                    str(port),
                    "--set",
                    f"confdir={confdir}",
                    "--set",
                    f"ssl_verify_upstream_trusted_ca={files.root_ca}",
                    "-q",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if _wait_listening(port, proc, confdir):
                break
            _terminate(proc)
            proc = None
        if proc is None:
            log.close()
            pytest.skip(
                "mitmdump did not start: " + (base / "mitmdump.log").read_text(errors="replace")
            )
        try:
            ca = confdir / "mitmproxy-ca-cert.pem"
            bundle = base / "bundle.pem"
            bundle.write_bytes(files.root_ca.read_bytes() + ca.read_bytes())
            yield Mitm(port, ca, bundle, upstream, pki, files)
        finally:
            _terminate(proc)
            log.close()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], confdir: Path) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if (confdir / "mitmproxy-ca-cert.pem").exists():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
        time.sleep(0.1)
    return False


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _received_since(server: TLSServer, start: int) -> bytes:
    with server._lock:
        return b"".join(server.received[start:])


def test_unpinned_client_goes_through_the_mitm(mitm: Mitm) -> None:
    # Control: with mitmproxy's CA trusted, a plain client talks to the real server through it.
    ctx = ssl.create_default_context(cafile=str(mitm.bundle))
    start = len(mitm.upstream.received)
    conn = http.client.HTTPSConnection("localhost", mitm.port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        leaf = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert conn.getresponse().read() == DEFAULT_BODY
    finally:
        conn.close()
    assert leaf != mitm.pki.leaf.der()  # the MITM's certificate, not the genuine one
    assert spki_pin(leaf) != spki_pin(mitm.pki.leaf)
    assert b"GET / HTTP/1.1" in _received_since(mitm.upstream, start)


# Every client, the WebSocket ones included: the pin check fails the TLS handshake, before any
# HTTP or WebSocket byte, so the upstream's protocol does not matter here.
@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_pinned_client_is_blocked(
    mitm: Mitm, client: Client, open_client: Callable[[Client, Pinning], Handle]
) -> None:
    recorder = Recorder()
    policy = policy_for("localhost", spki_pin(mitm.pki.intermediate), spki_pin(mitm.pki.root))
    handle = open_client(client, Pinning(policy, mitm.bundle, recorder))
    start = len(mitm.upstream.received)
    exc = fetch_error(handle, mitm.url())
    assert find_in_chain(exc, certpin.PinValidationError) is not None, repr(exc)
    assert recorder.count >= 1
    chain = recorder.failures[0].verified_chain
    assert chain[-1] == ssl.PEM_cert_to_DER_cert(mitm.ca.read_text())  # ends at mitmproxy's CA
    # mitmproxy may open its upstream connection eagerly, but no request ever reaches it.
    time.sleep(0.2)
    assert _received_since(mitm.upstream, start) == b""


@pytest.mark.parametrize("client", HTTP_CLIENTS, ids=str)
def test_certpin_without_a_rule_goes_through(
    mitm: Mitm, client: Client, open_client: Callable[[Client, Pinning], Handle]
) -> None:
    # The same certpin context with no rule for the host: CA validation alone, MITM undetected.
    policy = policy_for("elsewhere.example", spki_pin(make_key()), spki_pin(make_key()))
    handle = open_client(client, Pinning(policy, mitm.bundle))
    assert handle.fetch(mitm.url()) == DEFAULT_BODY
