"""Collector test helpers: a real uvicorn server on loopback, report bodies, subprocesses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from _support.pki import PKI
from certpin.cli.serve import listen_socket
from certpin.collector.app import Collector

DATA = Path(__file__).resolve().parent.parent / "data" / "reports"
TRUSTKIT_SAMPLE = DATA / "trustkit-ios-sample.json"
PG_USERS = ("postgres", "root")


class CollectorServer:
    """`Collector` served by uvicorn in a thread, on an ephemeral loopback port."""

    def __init__(
        self,
        db: str | None,
        *,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        root_path: str = "",
        http: str = "httptools",
        **options: Any,
    ) -> None:
        options.setdefault("admin_token", "test-token-" + uuid.uuid4().hex)
        token = options.pop("admin_token")
        self.collector = Collector(db, token, **options)
        self.token = token
        self.sock = listen_socket("127.0.0.1", 0)  # certpin serve's socket (TCP_NODELAY)
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if certfile else 'http'}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.collector.app,
            log_level="warning",
            http=http,  # certpin serve's default where httptools is installed
            ws="none",
            lifespan="on",
            root_path=root_path,
            ssl_certfile=None if certfile is None else os.fspath(certfile),
            ssl_keyfile=None if keyfile is None else os.fspath(keyfile),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def __enter__(self) -> CollectorServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("collector did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


def pg_base_url() -> str | None:
    """The first Postgres URL that works at 127.0.0.1:5432 (trust auth, database ``test``)."""
    import psycopg

    for user in PG_USERS:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=5432, dbname="test", user=user, connect_timeout=2
            ):
                return f"postgresql://{user}@127.0.0.1:5432/test"
        except psycopg.Error:
            continue
    return None


# -- report bodies --------------------------------------------------------------------------------


def pem(der: bytes, *, crlf: bool = False, width: int = 64) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    sep = "\r\n" if crlf else "\n"
    lines = [b64[i : i + width] for i in range(0, len(b64), width)]
    return "-----BEGIN CERTIFICATE-----\n" + sep.join(lines) + "\n-----END CERTIFICATE-----"


def pin_of(der: bytes) -> str:
    from certpin import Pin

    return Pin.for_certificate(der).base64


def other_pins() -> list[str]:
    return [
        'pin-sha256="' + base64.b64encode(hashlib.sha256(s).digest()).decode() + '"'
        for s in (b"backup-1", b"backup-2")
    ]


def rfc7469_report(pki: PKI, host: str = "reports.example.test") -> dict[str, Any]:
    chain = pki.leaf.chain_der(include_root=True)
    return {
        "date-time": "2025-01-02T03:04:05Z",
        "hostname": host,
        "port": 443,
        "effective-expiration-date": "2026-01-01T00:00:00Z",
        "include-subdomains": False,
        "noted-hostname": host,
        "served-certificate-chain": [pem(d) for d in chain[:2]],
        "validated-certificate-chain": [pem(d) for d in chain],
        "known-pins": other_pins(),
    }


def trustkit_android_report(pki: PKI) -> dict[str, Any]:
    chain = pki.leaf.chain_der(include_root=True)
    return {
        "app-bundle-id": "com.example.android",
        "app-version": "N/A",
        "app-vendor-id": "8d2a4b7c-1111-2222-3333-444455556666",
        "app-platform": "ANDROID",
        "trustkit-version": "1.1.3",
        "hostname": "reports.example.test",
        "port": 0,
        "noted-hostname": "example.test",
        "include-subdomains": True,
        "enforce-pinning": True,
        "validation-result": 1,
        "date-time": "2025-01-02T09:04:05Z",
        "served-certificate-chain": [pem(d, width=76) + "\n" for d in chain[:2]],
        "validated-certificate-chain": [pem(d, width=76) + "\n" for d in chain],
        "known-pins": list(reversed(other_pins())),
    }


def trustkit_ios_report(pki: PKI) -> dict[str, Any]:
    chain = pki.leaf.chain_der(include_root=True)
    return {
        "app-bundle-id": "com.example.ios",
        "app-version": "2.3",
        "app-platform": "IOS",
        "app-platform-version": "17.4",
        "app-vendor-id": "A1B2C3D4-0000-1111-2222-333344445555",
        "trustkit-version": "3.0.3",
        "hostname": "reports.example.test",
        "port": 443,
        "noted-hostname": "reports.example.test",
        "include-subdomains": False,
        "enforce-pinning": True,
        "validation-result": 1,
        "known-pins-expiration-date": None,
        "date-time": None,
        "validated-certificate-chain": [pem(d, crlf=True) for d in chain],
        "known-pins": other_pins(),
    }


def certpin_report(pki: PKI) -> dict[str, Any]:
    body = rfc7469_report(pki)
    body.update(
        {
            "certpin-version": "0.1.0",
            "mode": "enforce",
            "verdict-status": "failed",
            "verdict-reason": "no pin of the rule matches the verified chain",
            "report-id": uuid.uuid4().hex,
        }
    )
    return body


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# -- a collector subprocess -----------------------------------------------------------------------


class CollectorProcess:
    """``python -m certpin serve`` as a subprocess (for kill -9 and two-replica tests)."""

    def __init__(self, *args: str, token: str = "proc-token") -> None:
        env = {**os.environ, "CERTPIN_ADMIN_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        # Files, not pipes: nothing to drain, nothing left open when the process is killed.
        self.output = Path(tempfile.mkdtemp(prefix="certpin-collector-")) / "output.txt"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "certpin", "serve", "--port", "0", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 20
        line = ""
        while "listening on" not in line:
            text = self.output.read_text(errors="replace")
            line = next((x for x in text.splitlines() if "listening on" in x), "")
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                raise RuntimeError(f"collector did not start: {text!r}")
            time.sleep(0.02)
        self.url = line.split("listening on ")[1].split()[0].rstrip("/")
        self.token = token
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("collector not healthy")
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._close_pipes()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        self.output.unlink(missing_ok=True)
        self.output.parent.rmdir()
