"""Exports consumed by the real programs: /usr/bin/curl and OkHttp (Debian's libokhttp-java).

Each runs against a loopback TLS server serving leaf + intermediate, trusted via the test root:
the right pins connect, wrong pins are refused by the consumer itself.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from _support.pki import PKIFiles, make_pki
from _support.servers import TLSServer
from certpin import Pin, Policy
from certpin.formats import FORMATS, ExportOptions

pytestmark = pytest.mark.slow

CURL = shutil.which("curl")
JAVA, JAVAC = shutil.which("java"), shutil.which("javac")
JARS = [Path("/usr/share/java/okhttp.jar"), Path("/usr/share/java/okio.jar")]


def _random_pin() -> str:
    return "sha256/" + base64.b64encode(os.urandom(32)).decode()


def _export(fmt: str, domains: dict[str, object], **options: object) -> str:
    policy = Policy.from_dict({"domains": domains})
    return FORMATS[fmt].export(policy, ExportOptions(**options)).text  # type: ignore[arg-type]


# -- curl ---------------------------------------------------------------------------------------


def _curl_args(snippet: str) -> list[str]:
    (line,) = [ln for ln in snippet.splitlines() if ln.startswith("curl ")]
    return shlex.split(line)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_accepts_the_exported_leaf_pins_and_refuses_others(
    server: TLSServer, tmp_pki_files: PKIFiles
) -> None:
    leaf_pin = str(Pin.for_certificate(_der(tmp_pki_files.leaf_cert)))
    good = _curl_args(_export("curl", {"localhost": {"leaf_pins": [leaf_pin, _random_pin()]}}))
    bad = _curl_args(_export("curl", {"localhost": {"leaf_pins": [_random_pin(), _random_pin()]}}))
    assert good[-1] == "https://localhost/"

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        url = f"https://localhost:{server.port}/"
        cmd = [
            str(CURL),
            "-sS",
            "--noproxy",
            "*",
            "--resolve",
            f"localhost:{server.port}:127.0.0.1",
        ]
        cmd += ["--cacert", str(tmp_pki_files.root_ca), *args[1:-1], url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    ok = run(good)
    assert ok.returncode == 0, ok.stderr
    assert "HTTP/1.1" not in ok.stdout and ok.stdout  # the body arrived
    refused = run(bad)
    assert refused.returncode == 90, refused.stderr  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
    assert "pinned" in refused.stderr.lower()


def _der(pem_path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem_path.read_bytes()).public_bytes(Encoding.DER)


# -- OkHttp (Java) ------------------------------------------------------------------------------

_MAIN = r"""
import java.io.FileInputStream;
import java.io.InputStream;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;

public final class PinCheck {
    public static void main(String[] args) throws Exception {
        X509Certificate root;
        try (InputStream in = new FileInputStream(args[0])) {
            CertificateFactory factory = CertificateFactory.getInstance("X.509");
            root = (X509Certificate) factory.generateCertificate(in);
        }
        KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
        store.load(null, null);
        store.setCertificateEntry("test-root", root);
        TrustManagerFactory tmf =
            TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(store);
        X509TrustManager tm = (X509TrustManager) tmf.getTrustManagers()[0];
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, new TrustManager[] {tm}, null);
        OkHttpClient client = new OkHttpClient.Builder()
            .sslSocketFactory(tls.getSocketFactory(), tm)
            .certificatePinner(CertpinPins.certificatePinner())
            .build();
        Request request = new Request.Builder().url(args[1]).build();
        try (Response response = client.newCall(request).execute()) {
            System.out.println("STATUS " + response.code());
        } catch (SSLPeerUnverifiedException e) {
            System.out.println("PINNING-FAILURE " + e.getMessage());
            System.exit(3);
        }
    }
}
"""


def _run_okhttp(
    tmp: Path, snippet: str, root_ca: Path, url: str
) -> subprocess.CompletedProcess[str]:
    tmp.mkdir()
    (tmp / "CertpinPins.java").write_text(snippet)
    (tmp / "PinCheck.java").write_text(_MAIN)
    classpath = os.pathsep.join([str(j) for j in JARS] + [str(tmp)])
    compiled = subprocess.run(
        [
            str(JAVAC),
            "-cp",
            classpath,
            "-d",
            str(tmp),
            str(tmp / "CertpinPins.java"),
            str(tmp / "PinCheck.java"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stderr
    return subprocess.run(
        [str(JAVA), "-cp", classpath, "PinCheck", str(root_ca), url],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    JAVA is None or JAVAC is None or not all(j.exists() for j in JARS),
    reason="needs java, javac and Debian's libokhttp-java (/usr/share/java/okhttp.jar, okio.jar)",
)
def test_okhttp_java_snippet_compiles_and_pins(
    server: TLSServer, tmp_pki_files: PKIFiles, tmp_path: Path
) -> None:
    intermediate = str(Pin.for_certificate(_der(tmp_pki_files.intermediate_ca)))
    url = f"https://localhost:{server.port}/"
    # Debian ships OkHttp 3.13: export for OkHttp 3 (a "**." pattern would not even parse there).
    good = _export("okhttp-java", {"localhost": {"pins": [intermediate, _random_pin()]}}, okhttp=3)
    ok = _run_okhttp(tmp_path / "good", good, tmp_pki_files.root_ca, url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "STATUS 200" in ok.stdout
    wrong = _export(
        "okhttp-java", {"localhost": {"pins": [_random_pin(), _random_pin()]}}, okhttp=3
    )
    refused = _run_okhttp(tmp_path / "wrong", wrong, tmp_pki_files.root_ca, url)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "PINNING-FAILURE Certificate pinning failure!" in refused.stdout
    # A different PKI's intermediate pin is refused too (the chain, not the pin syntax, decides).
    other = str(Pin.for_certificate(make_pki(root_name="Other").intermediate.der()))
    rogue = _export("okhttp-java", {"localhost": {"pins": [other, _random_pin()]}}, okhttp=3)
    assert _run_okhttp(tmp_path / "rogue", rogue, tmp_pki_files.root_ca, url).returncode == 3
