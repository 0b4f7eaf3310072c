"""``python -m certpin._demo`` (``make demo``): pinning, a MITM and a key rotation, end to end.

Everything runs on loopback with a throwaway PKI, never the network or the system trust store.
Each step is a function in `STEPS` returning True when certpin behaved as expected; the exit
code is 0 only if every step did, so the demo doubles as a smoke test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import queue
import socketserver
import ssl
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import certpin

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
        (directory / f"{stem}.pem").write_bytes(_pem(leaf, self.cert))
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


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(ser.Encoding.PEM) for c in certs)


def _spki_pin(key: ec.EllipticCurvePrivateKey) -> certpin.Pin:
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


# -- the steps ------------------------------------------------------------------------------------


class Demo:
    """What the steps share; each step sets what later ones use."""

    intermediate: CA
    root_file: Path
    key_b: ec.EllipticCurvePrivateKey
    pin_a: certpin.Pin
    pin_b: certpin.Pin
    server: Server
    policy: certpin.Policy

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.servers = tmp, list[Server]()

    def serve(self, stem: Path) -> Server:
        self.servers.append(Server(stem))
        return self.servers[-1]


def _get(url: str, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return resp.status, resp.read()


def step_pki(d: Demo) -> bool:
    """Make a local PKI on loopback.

    A root CA, an intermediate, and a server certificate for localhost with key A. Key B is the
    backup: generated now and kept offline; it has no certificate yet."""
    root = CA("certpin demo root")
    d.intermediate = CA("certpin demo intermediate", root)
    d.root_file = d.tmp / "root.pem"
    d.root_file.write_bytes(_pem(root.cert))
    key_a = ec.generate_private_key(ec.SECP256R1())
    d.key_b = ec.generate_private_key(ec.SECP256R1())
    d.pin_a, d.pin_b = _spki_pin(key_a), _spki_pin(d.key_b)
    d.server = d.serve(d.intermediate.issue_leaf(key_a, d.tmp, "leaf-a"))
    say(f"  pin of key A (in use): {d.pin_a}\n  pin of key B (backup): {d.pin_b}", "bold")
    say(f"  server: https://localhost:{d.server.port}/ (leaf A <- intermediate <- root)")
    return True


def step_policy(d: Demo) -> bool:
    """Write the pin policy.

    Pin the keys, not the certificates: a re-issued certificate with the same key still matches.
    certpin refuses an enforcing rule without a backup pin (you could never rotate)."""
    toml = f'[domains."localhost"]\npins = [\n    "{d.pin_a}",  # key A, in use\n'
    toml += f'    "{d.pin_b}",  # key B, backup\n]\n'
    (d.tmp / "pins.toml").write_text(toml)
    say(toml, "cyan")
    d.policy = certpin.Policy.from_file(d.tmp / "pins.toml")
    return d.policy.lookup("localhost") is not None


def _pinned(d: Demo, cafile: Path | None = None) -> ssl.SSLContext:
    return certpin.create_default_context(d.policy, cafile=cafile or d.root_file)


def step_pinned_request(d: Demo) -> bool:
    """Pinned request to the real server.

    urlopen(url, context=certpin.create_default_context(policy, cafile=root)): CA validation,
    host name check, then the pin check, before the request is sent."""
    status, body = _get(f"https://localhost:{d.server.port}/", _pinned(d))
    say(f"  -> HTTP {status}, body {body!r}", "green")
    return status == 200 and body == b"hello"


def step_mitm(d: Demo) -> bool:
    """Man in the middle with a CA the client trusts.

    An interceptor with its own CA, which the client ALSO trusts (like a corporate TLS inspection
    root), answers for localhost. CA validation alone cannot tell it from the real server."""
    rogue_root = CA("Totally Legit Inspection CA")
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = d.serve(CA("Inspection intermediate", rogue_root).issue_leaf(rogue_key, d.tmp, "rogue"))
    both = d.tmp / "both-roots.pem"
    both.write_bytes(d.root_file.read_bytes() + _pem(rogue_root.cert))
    url = f"https://localhost:{rogue.port}/"
    status, _ = _get(url, ssl.create_default_context(cafile=both))
    sent = rogue.received.get(timeout=5)
    say(f"  unpinned ssl.create_default_context(cafile=both): HTTP {status}", "yellow")
    say(f"  and the interceptor read the request: {sent.splitlines()[0]!r}...", "yellow")
    try:
        _get(url, _pinned(d, cafile=both))
    except urllib.error.URLError as exc:
        error = exc.reason
    else:
        say("  the pinned request went through: NOT expected", "bold red")
        return False
    leaked = rogue.received.get(timeout=5)
    say(f"  pinned: BLOCKED with {type(error).__name__}:", "bold green")
    say("    " + str(error).replace("\n", "\n    "), "green")
    say(f"  application bytes the interceptor got from the pinned client: {len(leaked)}", "bold")
    return isinstance(error, certpin.PinValidationError) and status == 200 and leaked == b""


def step_rotation(d: Demo) -> bool:
    """Rotate the server to the backup key.

    Key A is retired: the server gets a new certificate for key B. Clients keep the same policy
    and keep working, because B was pinned from the start."""
    d.server.set_certificate(d.intermediate.issue_leaf(d.key_b, d.tmp, "leaf-b"))
    # http.client (what urllib uses) directly, to look at the verified chain afterwards.
    conn = http.client.HTTPSConnection("localhost", d.server.port, context=_pinned(d), timeout=5)
    with contextlib.closing(conn):
        conn.connect()  # the handshake, and certpin's check, happen here
        sock: Any = conn.sock
        result: certpin.Verdict = sock.certpin_verdict  # set by the hook
        conn.request("GET", "/")
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    say(f"  -> HTTP {status}, body {body!r}; verdict: {result.status.value}", "green")
    say(f"  matched pin = {result.matched_pin} (key B)", "bold green")
    return status == 200 and result.matched_pin == d.pin_b


# Later features (collector, signed bundles) add their steps here.
STEPS = [step_pki, step_policy, step_pinned_request, step_mitm, step_rotation]


def main() -> int:
    results: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="certpin-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            for number, step in enumerate(STEPS, 1):
                title, _, why = (step.__doc__ or step.__name__).partition(".\n")
                say(f"\n{number}. {title}", "bold underline")
                say(" ".join(why.split()), "dim")
                try:
                    ok = step(demo)
                except Exception as exc:  # a smoke test reports, then goes on to the summary
                    say(f"  unexpected {type(exc).__name__}: {exc}", "bold red")
                    ok = False
                results.append((title, ok))
                if not ok:
                    break  # later steps build on earlier ones
        finally:
            for server in demo.servers:
                server.shutdown()
                server.server_close()
    say(f"\n{len(STEPS) + 1}. Summary", "bold underline")
    for title, ok in results:
        say(f"  {'PASS' if ok else 'FAIL'}  {title}", "green" if ok else "bold red")
    passed = len(results) == len(STEPS) and all(ok for _, ok in results)
    last = "Every step behaved as expected." if passed else "A step did NOT behave as expected."
    say(last, "bold green" if passed else "bold red")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
