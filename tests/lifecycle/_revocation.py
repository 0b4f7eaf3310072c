"""Real revocation infrastructure on loopback for the tests: a CA whose leaves name an OCSP
responder and a CRL distribution point, ``openssl ocsp`` as the responder, ``openssl s_server
-status_file`` stapling a response, and a tiny HTTP server for CRLs."""

from __future__ import annotations

import datetime as dt
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from _support.servers import LoopbackHTTPServer, free_port, wait_port

OPENSSL = shutil.which("openssl")
NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


@dataclass
class CA:
    """A self-signed CA issuing leaves for 127.0.0.1/localhost."""

    name: str = "Revocation Test CA"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(self.name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
        )
        self.cert = builder.sign(self.key, hashes.SHA256())

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def issue(
        self,
        cn: str = "localhost",
        *,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
        ocsp_signing: bool = False,
        extra: list[x509.ExtensionType] | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if not ocsp_signing:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
            )
        if ocsp_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(ocsp_url),
                        )
                    ]
                ),
                critical=False,
            )
        if crl_url:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(crl_url)], None, None, None
                        )
                    ]
                ),
                critical=False,
            )
        for ext in extra or []:
            builder = builder.add_extension(ext, critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    def crl(
        self,
        revoked: list[x509.Certificate] = (),  # type: ignore[assignment]
        *,
        next_update: dt.datetime | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(NOW - dt.timedelta(hours=1))
            .next_update(next_update or NOW + dt.timedelta(days=7))
        )
        for cert in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(NOW - dt.timedelta(minutes=30))
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(signer or self.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.DER)


def write_index(path: Path, good: list[x509.Certificate], revoked: list[x509.Certificate]) -> None:
    """An ``openssl ca`` index: V (valid) and R (revoked, keyCompromise) lines."""
    lines = []
    expiry = (NOW + dt.timedelta(days=90)).strftime("%y%m%d%H%M%SZ")
    revoked_at = (NOW - dt.timedelta(minutes=30)).strftime("%y%m%d%H%M%SZ")
    for cert in good:
        lines.append(f"V\t{expiry}\t\t{cert.serial_number:X}\tunknown\t/CN=x")
    for cert in revoked:
        lines.append(
            f"R\t{expiry}\t{revoked_at},keyCompromise\t{cert.serial_number:X}\tunknown\t/CN=x"
        )
    path.write_text("\n".join(lines) + "\n")


def _files(tmp: Path, stem: str, issued: Issued | CA) -> tuple[Path, Path]:
    cert, key = tmp / f"{stem}.pem", tmp / f"{stem}.key"
    cert.write_bytes(_pem(issued.cert))
    key.write_bytes(_key_pem(issued.key))
    return cert, key


def _responder(
    tmp: Path,
    stem: str,
    ca: CA,
    signer: Issued | CA | None,
    good: list[x509.Certificate],
    revoked: list[x509.Certificate],
) -> tuple[Path, list[str]]:
    """The files of an ``openssl ocsp`` responder for `ca` (an index of `good` and `revoked`,
    responses signed by `signer`, default the CA itself): the CA's PEM and the options."""
    index = tmp / f"{stem}-index.txt"
    write_index(index, good, revoked)
    ca_pem, _ = _files(tmp, f"{stem}-ca", ca)
    rsigner, rkey = _files(tmp, f"{stem}-signer", signer or ca)
    files = {"-index": index, "-CA": ca_pem, "-rsigner": rsigner, "-rkey": rkey}
    return ca_pem, [arg for option, path in files.items() for arg in (option, str(path))]


@contextmanager
def ocsp_responder(
    tmp: Path,
    ca: CA,
    *,
    good: list[x509.Certificate] = (),  # type: ignore[assignment]
    revoked: list[x509.Certificate] = (),  # type: ignore[assignment]
    signer: Issued | CA | None = None,
    port: int | None = None,
    ndays: int = 1,
) -> Iterator[str]:
    """``openssl ocsp`` answering for `ca` on loopback; yields its URL."""
    assert OPENSSL is not None
    _, responder = _responder(tmp, "ocsp", ca, signer, list(good), list(revoked))
    port = port or free_port()
    proc = subprocess.Popen(
        [OPENSSL, "ocsp", *responder, "-port", str(port), "-ndays", str(ndays)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Not a probe connection: openssl 3.0's responder hangs on a connection that sends
        # nothing. It says when it listens.
        assert proc.stdout is not None
        seen = b""
        while b"waiting for OCSP client connections" not in seen:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"openssl ocsp exited: {seen!r}")
            seen += line
        drain = threading.Thread(target=proc.stdout.read, daemon=True)
        drain.start()
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            if "drain" in locals():
                drain.join(5)
            proc.stdout.close()


def ocsp_response_file(
    tmp: Path,
    ca: CA,
    leaf: Issued,
    *,
    revoked: bool = False,
    signer: Issued | CA | None = None,
) -> Path:
    """A DER OCSP response for `leaf` made offline by ``openssl ocsp -reqin … -respout``."""
    assert OPENSSL is not None
    listed = [leaf.cert]
    ca_pem, responder = _responder(
        tmp, "staple", ca, signer, [] if revoked else listed, listed if revoked else []
    )
    leaf_pem, _ = _files(tmp, "staple-leaf", leaf)
    req, resp = tmp / "staple-req.der", tmp / "staple-resp.der"
    subprocess.run(
        [
            OPENSSL,
            "ocsp",
            "-issuer",
            str(ca_pem),
            "-cert",
            str(leaf_pem),
            "-no_nonce",
            "-reqout",
            str(req),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            OPENSSL,
            "ocsp",
            *responder,
            "-reqin",
            str(req),
            "-respout",
            str(resp),
            "-ndays",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    return resp


@contextmanager
def tls_server(
    tmp: Path, ca: CA, leaf: Issued, *, status_file: Path | None = None
) -> Iterator[int]:
    """``openssl s_server`` serving `leaf` on loopback (stapling `status_file` if given)."""
    assert OPENSSL is not None
    cert, key = _files(tmp, "server", leaf)
    port = free_port()
    argv = [
        OPENSSL,
        "s_server",
        "-accept",
        f"127.0.0.1:{port}",
        "-cert",
        str(cert),
        "-key",
        str(key),
        "-www",
        "-quiet",
    ]
    if status_file is not None:
        argv += ["-status_file", str(status_file)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_port(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class CRLServer(LoopbackHTTPServer):
    """A loopback HTTP server for CRLs: ``server.files['/ca.crl'] = der``; counts requests."""

    def __init__(self) -> None:
        handler = type("H", (_Handler,), {"files": {}})
        self.files: dict[str, bytes] = handler.files  # type: ignore[attr-defined]
        self.requests = 0
        outer = self

        class Counting(handler):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802
                outer.requests += 1
                super().do_GET()

        super().__init__(Counting)

    def url(self, path: str = "/ca.crl") -> str:
        return f"http://127.0.0.1:{self.port}{path}"
