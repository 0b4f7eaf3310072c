"""The process-wide pinning test harness: certificates, policies, server stacks, and running a
client in a fresh interpreter (tests/process/conftest.py turns these into fixtures).

Hosts: ``127.0.0.1`` is pinned (to the good leaf's key and a spare key), ``localhost`` is not;
both reach the same loopback servers. Trust: every client trusts the good root *and* the rogue
root (one CA file): the MITM's certificate is CA-valid, only the pins can stop it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _support.pki import PKIFiles, make_key, make_pki, spki_pin, write_pki_files
from _support.servers import TLSServer, WebSocketTLSServer
from process._servers import (
    IMAPServer,
    MitmProxy,
    PostgresServer,
    RedisServer,
    SMTPServer,
    http_response,
)

HERE = Path(__file__).resolve().parent
CLIENT_SCRIPT = HERE / "_client.py"
PINNED = "127.0.0.1"
UNPINNED = "localhost"
SUBPROCESS_TIMEOUT = 90
S3_BUCKET = "certpin-bucket"
S3_LIST_BUCKETS = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Owner><ID>certpin</ID><DisplayName>certpin</DisplayName></Owner><Buckets><Bucket>"
    b"<Name>" + S3_BUCKET.encode() + b"</Name><CreationDate>2024-01-01T00:00:00.000Z"
    b"</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>"
)

#: Variables that would hand a client another trust store, a proxy, or pip/AWS settings of the
#: machine: never inherited by a client process.
_DROPPED_PREFIXES = ("PIP_", "AWS_", "CERTPIN_", "SSL_CERT_", "PYTHONWARNINGS")
_DROPPED = {
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PYTHONPATH",
    *(n for b in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY") for n in (b, b.lower())),
}


def certpin_command() -> list[str]:
    """``certpin`` next to this interpreter (the venv's script), else ``python -m certpin``."""
    script = Path(sys.executable).with_name("certpin")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "certpin"]


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


class Unavailable(Exception):
    """A server the test needs cannot run on this machine (the test is skipped, saying why)."""


@dataclass
class Material:
    """Certificates, the client's CA file and the policies, written under `directory`."""

    directory: Path
    good: PKIFiles
    rogue: PKIFiles
    untrusted: PKIFiles
    wrong_name_cert: Path
    wrong_name_key: Path
    bundle: Path
    policy: Path
    deny_policy: Path
    wrong_policy: Path

    @classmethod
    def create(cls, directory: Path) -> Material:
        names = (UNPINNED, PINNED)
        good = make_pki(names)
        rogue = make_pki(names, root_name="Rogue Root CA", intermediate_name="Rogue Issuing CA")
        untrusted = make_pki(names, root_name="Untrusted Root", intermediate_name="Untrusted CA")
        # CA-valid, with the pinned leaf key, but issued for another name.
        wrong_name = good.intermediate.issue_leaf("elsewhere.example", key=good.leaf.key)
        wrong_cert, wrong_key = wrong_name.write(directory / "wrong-name")
        bundle = directory / "trusted-cas.pem"
        bundle.write_bytes(good.root.pem() + rogue.root.pem())
        leaf_pin, spare = spki_pin(good.leaf), spki_pin(make_key("p256"))
        policy = directory / "policy.toml"
        policy.write_text(f'[domains."{PINNED}"]\npins = ["{leaf_pin}", "{spare}"]\n')
        deny = directory / "deny-policy.toml"
        deny.write_text(f'unpinned_hosts = "deny"\n\n{policy.read_text()}')
        wrong = directory / "wrong-policy.toml"
        other = spki_pin(make_key("p256"))
        wrong.write_text(f'[domains."{PINNED}"]\npins = ["{other}", "{spare}"]\n')
        return cls(
            directory=directory,
            good=write_pki_files(good, directory / "good"),
            rogue=write_pki_files(rogue, directory / "rogue"),
            untrusted=write_pki_files(untrusted, directory / "untrusted"),
            wrong_name_cert=wrong_cert,
            wrong_name_key=wrong_key,
            bundle=bundle,
            policy=policy,
            deny_policy=deny,
            wrong_policy=wrong,
        )

    def upstream_context(self) -> ssl.SSLContext:
        """What the MITM uses to reach the real server (it trusts the good root)."""
        return ssl.create_default_context(cafile=str(self.good.root_ca))

    def mitm(
        self, upstream_port: int, identity: PKIFiles | None = None, **options: Any
    ) -> MitmProxy:
        """A started `MitmProxy` in front of 127.0.0.1:`upstream_port`, with the certificate of
        `identity` (default: the rogue CA's, which clients trust); `options` as MitmProxy's."""
        files = identity or self.rogue
        return MitmProxy(
            files.certfile,
            files.keyfile,
            ("127.0.0.1", upstream_port),
            self.upstream_context(),
            **options,
        ).start()


@dataclass
class Stack:
    """A real server (good certificate) and the MITM in front of it (rogue certificate)."""

    kind: str
    good: Any
    mitm: MitmProxy
    closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()


def build_stack(kind: str, m: Material) -> Stack:
    """Start the `kind` server and its MITM (`Unavailable` when redis-server is missing or was
    built without TLS)."""
    good_files = m.good
    closers: list[Any] = []
    good: Any
    if kind == "http":
        good = TLSServer(good_files.certfile, good_files.keyfile, alpn=None).start()
    elif kind == "ws":
        good = WebSocketTLSServer(good_files.certfile, good_files.keyfile).start()
    elif kind == "s3":
        response = http_response(S3_LIST_BUCKETS, "application/xml")
        good = TLSServer(good_files.certfile, good_files.keyfile, response=response).start()
    elif kind == "smtp":
        good = SMTPServer(good_files.certfile, good_files.keyfile).start()
    elif kind == "imap":
        good = IMAPServer(good_files.certfile, good_files.keyfile).start()
    elif kind == "pg":
        good = PostgresServer(good_files.certfile, good_files.keyfile).start()
    elif kind == "redis":
        try:
            good = RedisServer(
                good_files.certfile, good_files.keyfile, good_files.root_ca, m.directory / "redis"
            )
        except FileNotFoundError:
            raise Unavailable("redis-server is not installed (Debian: redis-server)") from None
        try:
            good.wait_ready(m.upstream_context())
        except RuntimeError:
            good.stop()
            if good.no_tls():
                raise Unavailable("redis-server was built without TLS support") from None
            raise
    else:  # pragma: no cover - a typo in a test table
        raise ValueError(kind)
    closers.append(good.stop)
    mitm = m.mitm(
        good.port,
        postgres=kind == "pg",
        # websockets' sync client reads and writes one SSLSocket from two threads; a TLS 1.3
        # ticket arriving at the wrong moment stalls it (see WebSocketTLSServer).
        session_tickets=kind != "ws",
    )
    closers.append(mitm.stop)
    return Stack(kind, good, mitm, closers)


def client_env(m: Material, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a client process: this one without trust, proxy, pip, AWS or
    certpin settings; plus dummy AWS credentials and `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)
    }
    env.update(
        AWS_ACCESS_KEY_ID="certpin-test",
        AWS_SECRET_ACCESS_KEY="certpin-test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="1",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra or {})
    return env


@dataclass
class Run:
    """A finished client process: its JSON outcome (`result`), exit status and output."""

    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]

    def describe(self) -> str:
        return (
            f"exit {self.returncode}\n--- result\n{json.dumps(self.result, indent=1)[:4000]}\n"
            f"--- stderr\n{self.stderr[-4000:]}"
        )


def run_process(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    pinned: bool,
    policy: Path,
    run_options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a fresh process; under ``certpin run --policy P [run_options] --`` when
    `pinned`."""
    command = list(argv)
    if pinned:
        command = [*certpin_command(), "run", "--policy", str(policy), *run_options, "--", *argv]
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        cwd=str(HERE),
        check=False,
    )


def run_client(
    m: Material,
    client: str,
    host: str,
    port: int,
    mode: str = "verify",
    *,
    pinned: bool = True,
    policy: Path | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    run_options: Sequence[str] = (),
) -> Run:
    """``_client.py CLIENT HOST PORT MODE`` in a fresh interpreter (see `run_process`)."""
    argv = [
        sys.executable,
        str(CLIENT_SCRIPT),
        client,
        host,
        str(port),
        mode,
        "--cafile",
        str(m.bundle),
        *args,
    ]
    done = run_process(
        argv, client_env(m, env), pinned=pinned, policy=policy or m.policy, run_options=run_options
    )
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if not isinstance(result, dict) or "ok" not in result:
        raise AssertionError(
            f"{client} printed no outcome (exit {done.returncode})\n--- stdout\n"
            f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
    return Run(done.returncode, done.stdout, done.stderr, result)


class Traffic:
    """What a server received during a block: ``with Traffic(server) as t: …; t.bytes``.

    Works with `TLSServer`-like servers (``received``: one bytes entry per completed
    handshake) and counts the MITM's accepted connections (``connections``) when it has them.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.bytes = 0
        self.connections = 0
        self.handshakes = 0

    def __enter__(self) -> Traffic:
        self._received = len(self.server.received)
        self._connections = getattr(self.server, "connections", 0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.wait_idle()
        received = list(self.server.received)[self._received :]
        self.handshakes = len(received)
        self.bytes = sum(len(chunk) for chunk in received)
        self.connections = getattr(self.server, "connections", 0) - self._connections
