"""Issue #16's matrix: every client library x {good server, MITM with a trusted rogue CA,
unpinned host, verification off to a pinned host, verification off to an unpinned host}.

Each case is one fresh process, ``certpin run --policy P -- python _client.py …``: pinning comes
from the start-up hook alone, the client code is the library's ordinary usage. The MITM
(`MitmProxy`) is a working interceptor whose certificate the client trusts; it counts the
application bytes it receives, which must be zero whenever the host is pinned. The twin of
every refusal is the same request without certpin (`test_mitm_succeeds_without_certpin`): the
interceptor then gets the request and the client the answer.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _support.servers import DEFAULT_BODY
from process._harness import (
    PINNED,
    S3_BUCKET,
    UNPINNED,
    Material,
    Run,
    Stack,
    Traffic,
    client_env,
    has_module,
    run_client,
    run_process,
)
from process._servers import MitmProxy, RoutedHTTPServer

PROBE = "certpin-probe"  # what _client.py sends where the protocol echoes (websockets, redis)


@dataclass(frozen=True)
class Client:
    name: str
    stack: str  # the server kind (process._harness.build_stack)
    body: str  # a successful run's result contains this
    requires: tuple[str, ...] = ()
    env: Callable[[Material], dict[str, str]] | None = None  # trust through the environment
    slow: bool = False

    def __str__(self) -> str:
        return self.name


def _ssl_cert_file(m: Material) -> dict[str, str]:
    return {"SSL_CERT_FILE": str(m.bundle)}


def _aws_ca_bundle(m: Material) -> dict[str, str]:
    return {"AWS_CA_BUNDLE": str(m.bundle)}


HTTP = DEFAULT_BODY.decode()
CLIENTS = [
    Client("urllib", "http", HTTP, env=_ssl_cert_file),
    Client("http.client", "http", HTTP),
    Client("requests", "http", HTTP, ("requests",)),
    Client("urllib3", "http", HTTP, ("urllib3",)),
    Client("httpx", "http", HTTP, ("httpx",), env=_ssl_cert_file),
    Client("httpx-async", "http", HTTP, ("httpx",), env=_ssl_cert_file),
    Client("aiohttp", "http", HTTP, ("aiohttp",)),
    Client("aiohttp-default", "http", HTTP, ("aiohttp",), env=_ssl_cert_file),
    Client("truststore", "http", HTTP, ("truststore",)),
    Client("pip-requests", "http", HTTP, ("pip",)),
    Client("pip-truststore", "http", HTTP, ("pip",)),
    Client("websockets-sync", "ws", PROBE, ("websockets",)),
    Client("websockets-async", "ws", PROBE, ("websockets",)),
    Client("boto3", "s3", S3_BUCKET, ("boto3",), env=_aws_ca_bundle, slow=True),
    Client("redis", "redis", PROBE, ("redis",)),
    Client("smtplib", "smtp", "250 OK"),
    Client("imaplib", "imap", "OK NOOP completed"),
    Client("asyncpg", "pg", "ServerVersion(major=15", ("asyncpg",)),
]


@dataclass(frozen=True)
class Scenario:
    name: str
    host: str
    through_mitm: bool
    mode: str  # "verify" or "off"
    succeeds: bool

    def __str__(self) -> str:
        return self.name


SCENARIOS = [
    Scenario("good-server", PINNED, through_mitm=False, mode="verify", succeeds=True),
    Scenario("mitm-trusted-rogue-ca", PINNED, through_mitm=True, mode="verify", succeeds=False),
    Scenario("unpinned-host", UNPINNED, through_mitm=True, mode="verify", succeeds=True),
    Scenario("verify-off-pinned", PINNED, through_mitm=True, mode="off", succeeds=False),
    Scenario("verify-off-unpinned", UNPINNED, through_mitm=True, mode="off", succeeds=True),
]


def _params(clients: list[Client]) -> list[object]:
    return [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in clients]


def _require(client: Client) -> None:
    for module in client.requires:
        if not has_module(module):
            pytest.skip(f"{client.name} needs the {module} package")


def _run(
    material: Material, client: Client, host: str, port: int, mode: str, *, pinned: bool = True
) -> Run:
    env = client.env(material) if client.env else None
    return run_client(material, client.name, host, port, mode, pinned=pinned, env=env)


def assert_refused(run: Run, traffic: Traffic) -> None:
    """The client failed with certpin's SSLCertVerificationError subclass (or the library's
    wrapping of it) and the interceptor received not one application byte."""
    assert run.result["ok"] is False, run.describe()
    assert run.result["pin_error"] and run.result["cert_error"], run.describe()
    assert traffic.connections >= 1, "the client never reached the interceptor"
    assert traffic.bytes == 0, f"{traffic.bytes} application bytes reached the interceptor"


def assert_served(run: Run, client: Client) -> None:
    assert run.result["ok"] is True, run.describe()
    assert client.body in run.result["body"], run.describe()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
@pytest.mark.parametrize("client", _params(CLIENTS))
def test_client_matrix(
    client: Client, scenario: Scenario, material: Material, stacks: Callable[[str], Stack]
) -> None:
    _require(client)
    stack = stacks(client.stack)
    server = stack.mitm if scenario.through_mitm else stack.good
    with Traffic(stack.mitm) as traffic:
        run = _run(material, client, scenario.host, server.port, scenario.mode)
    assert run.result["injected"], "certpin run did not inject into the client process"
    if scenario.succeeds:
        assert_served(run, client)
        if scenario.through_mitm:  # the interceptor works: it saw the request
            assert traffic.bytes > 0
    else:
        assert_refused(run, traffic)


@pytest.mark.parametrize("mode", ["verify", "off"])
@pytest.mark.parametrize("client", _params(CLIENTS))
def test_mitm_succeeds_without_certpin(
    client: Client, mode: str, material: Material, stacks: Callable[[str], Stack]
) -> None:
    """The twin of the refusals: without certpin the same client, trust store and interceptor
    exchange data with the pinned host's impostor."""
    _require(client)
    stack = stacks(client.stack)
    with Traffic(stack.mitm) as traffic:
        run = _run(material, client, PINNED, stack.mitm.port, mode, pinned=False)
    assert run.result["injected"] is False
    assert_served(run, client)
    assert traffic.bytes > 0


# -- pip: the whole program under `certpin run` ---------------------------------------------------

WHEEL = "certpin_probe-1.0-py3-none-any.whl"


def _wheel() -> bytes:
    """A minimal valid pure-Python wheel (PEP 427) for the project certpin-probe 1.0."""
    files = {
        "certpin_probe/__init__.py": b"",
        "certpin_probe-1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: certpin-probe\nVersion: 1.0\n"
        ),
        "certpin_probe-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: certpin-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    files["certpin_probe-1.0.dist-info/RECORD"] = (
        record + "certpin_probe-1.0.dist-info/RECORD,,\n"
    ).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def pip_index(material: Material) -> Iterator[tuple[RoutedHTTPServer, MitmProxy]]:
    """A PEP 503 simple index serving certpin-probe, and a MITM in front of it."""
    wheel = _wheel()
    page = (
        f'<!DOCTYPE html><html><body><a href="/files/{WHEEL}#sha256='
        f'{hashlib.sha256(wheel).hexdigest()}">{WHEEL}</a></body></html>'
    ).encode()
    routes = {
        "/simple/certpin-probe/": ("text/html", page),
        f"/files/{WHEEL}": ("application/octet-stream", wheel),
    }
    good = RoutedHTTPServer(material.good.certfile, material.good.keyfile, routes).start()
    mitm = material.mitm(good.port)
    yield good, mitm
    mitm.stop()
    good.stop()


def _pip_download(
    material: Material, host: str, port: int, mode: str, dest: Path, *, pinned: bool
) -> tuple[int, str]:
    argv = [
        sys.executable, "-m", "pip", "download", "certpin-probe",
        "--index-url", f"https://{host}:{port}/simple/",
        "--cert", str(material.bundle),
        "--no-deps", "--no-cache-dir", "--retries", "0", "--timeout", "15",
        "--dest", str(dest),
    ]  # fmt: skip
    if mode == "off":
        argv += ["--trusted-host", f"{host}:{port}"]
    done = run_process(argv, client_env(material), pinned=pinned, policy=material.policy)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_pip_download(
    scenario: Scenario,
    material: Material,
    pip_index: tuple[RoutedHTTPServer, MitmProxy],
    tmp_path: Path,
) -> None:
    """``certpin run -- python -m pip download`` from a loopback index: pip's own requests,
    urllib3 and truststore (its default since 24.2), imported after the injection."""
    if not has_module("pip"):
        pytest.skip("pip is not installed in this interpreter")
    good, mitm = pip_index
    server = mitm if scenario.through_mitm else good
    with Traffic(mitm) as traffic:
        status, output = _pip_download(
            material, scenario.host, server.port, scenario.mode, tmp_path, pinned=True
        )
    downloaded = (tmp_path / WHEEL).exists()
    assert "RecursionError" not in output, output[-3000:]
    if scenario.succeeds:
        assert status == 0 and downloaded, output[-3000:]
        if scenario.through_mitm:
            assert traffic.bytes > 0
    else:
        assert status != 0 and not downloaded, output[-3000:]
        assert (
            "Certificate pinning failure" in output or "refusing connection to pinned" in output
        ), output[-3000:]
        assert traffic.connections >= 1
        assert traffic.bytes == 0, f"{traffic.bytes} bytes reached the interceptor"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["verify", "off"])
def test_pip_download_through_mitm_without_certpin(
    mode: str, material: Material, pip_index: tuple[RoutedHTTPServer, MitmProxy], tmp_path: Path
) -> None:
    if not has_module("pip"):
        pytest.skip("pip is not installed in this interpreter")
    _good, mitm = pip_index
    with Traffic(mitm) as traffic:
        status, output = _pip_download(material, PINNED, mitm.port, mode, tmp_path, pinned=False)
    assert status == 0 and (tmp_path / WHEEL).exists(), output[-3000:]
    assert traffic.bytes > 0
