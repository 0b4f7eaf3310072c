"""Helpers for ``python examples/demo/demo.py``: output, a compact PKI, small loopback servers.

Nothing here is public API; it keeps `demo.py` down to the story its steps tell.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import queue
import socketserver
import ssl
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import certpin

__all__ = ["CA", "BundleServer", "LogTap", "Server", "new_key", "pem", "say", "spki_pin"]

try:
    from rich.console import Console

    _console: Any = Console(highlight=False)
except ImportError:  # rich comes with the "cli" extra; plain print works too
    _console = None


def say(text: str, style: str = "") -> None:
    if _console is None:
        print(text, flush=True)
    else:
        _console.print(text, style=style or None, markup=False, soft_wrap=True)


# -- a compact PKI: root -> intermediate -> leaf, accepted under VERIFY_X509_STRICT ---------------


class CA:
    """A P-256 CA; a root when `parent` is None."""

    def __init__(self, name: str, parent: CA | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = _issue(name, self.key.public_key(), parent or self, ca=True)

    def issue_leaf(self, key: ec.EllipticCurvePrivateKey, directory: Path, stem: str) -> Path:
        """Write ``stem.pem`` (leaf + this intermediate, as served) and ``stem.key``."""
        leaf = _issue(f"localhost ({stem})", key.public_key(), self, ca=False)
        (directory / f"{stem}.pem").write_bytes(pem(leaf, self.cert))
        pem_key = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        (directory / f"{stem}.key").write_bytes(pem_key)
        return directory / stem


def _issue(name: str, public_key: Any, issuer: CA, *, ca: bool) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    # A root is its own issuer; `issuer.cert` does not exist yet while the root is being built.
    issuer_name = issuer.cert.subject if hasattr(issuer, "cert") else subject
    now = dt.datetime.now(dt.UTC)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    # digitalSignature; keyCertSign + cRLSign for CAs (RFC 5280 §4.2.1.3)
    usage = x509.KeyUsage(True, False, False, False, False, ca, ca, False, False)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )
    if not ca:  # a TLS server: names in the SAN (RFC 6125 ignores the CN), serverAuth EKU
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
        b = b.add_extension(eku, critical=False)
    return b.sign(issuer.key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(ser.Encoding.PEM) for c in certs)


def spki_pin(key: ec.EllipticCurvePrivateKey) -> certpin.Pin:
    spki = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return certpin.Pin.for_spki(spki)


# -- a small threaded HTTPS server that records what it receives --------------------------------

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


class Server(socketserver.ThreadingTCPServer):
    """HTTPS on 127.0.0.1 answering ``200 hello``. `received` gets, per finished connection, the
    application bytes that arrived (b"" when the client hung up right after the handshake).
    ``server_close()`` joins the connection threads (``block_on_close``)."""

    def __init__(self, stem: Path) -> None:
        super().__init__(("127.0.0.1", 0), socketserver.BaseRequestHandler)
        self.port: int = self.server_address[1]
        self.received: queue.Queue[bytes] = queue.Queue()
        self.set_certificate(stem)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def set_certificate(self, stem: Path) -> None:
        """Serve ``stem.pem``/``stem.key`` to connections accepted from now on."""
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(f"{stem}.pem", f"{stem}.key")

    def finish_request(self, request: Any, client_address: Any) -> None:
        data = b""
        request.settimeout(5)
        try:
            with self._ctx.wrap_socket(request, server_side=True) as tls:
                while b"\r\n\r\n" not in data and (chunk := tls.recv(4096)):
                    data += chunk
                if data:
                    tls.sendall(_RESPONSE)
        except OSError:
            pass  # the client refused us or hung up: that is what step 4 is about
        self.received.put(data)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class BundleServer:
    """``certpin bundle serve`` over HTTPS on 127.0.0.1, in a thread: publish = write the file."""

    def __init__(self, stem: Path, directory: Path) -> None:
        from certpin.dynamic.serve import make_server, serve_in_thread

        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.server = make_server(
            directory, "127.0.0.1", 0, f"{stem}.pem", f"{stem}.key", quiet=True
        )
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/pins.jws"
        self.thread = serve_in_thread(self.server)

    def publish(self, token: str) -> None:
        (self.directory / "pins.jws").write_text(token)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class LogTap(logging.Handler):
    """Collects certpin's log records (so the demo can show them, and nothing else leaks)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        logger = logging.getLogger("certpin")
        logger.addHandler(self)
        logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self, needle: str = "") -> list[str]:
        """The messages logged since the last call that contain `needle` (then forgets all)."""
        lines = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        return [line for line in lines if needle in line]


# -- the collector, in-process: uvicorn on a loopback port with the demo's TLS certificate --------


class CollectorServer:
    """`certpin serve`'s app on 127.0.0.1 (HTTPS), in a background thread."""

    def __init__(self, stem: Path, db: Path, token: str) -> None:
        import threading

        import uvicorn

        from certpin.collector.app import create_app

        self.token = token
        config = uvicorn.Config(
            create_app(str(db), token),
            host="127.0.0.1",
            port=0,
            ssl_certfile=f"{stem}.pem",
            ssl_keyfile=f"{stem}.key",
            log_level="warning",
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                break
            threading.Event().wait(0.01)
        sockets = self._server.servers[0].sockets if self._server.servers else []
        if not sockets:
            raise RuntimeError("the collector did not start")
        self.port = int(sockets[0].getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
