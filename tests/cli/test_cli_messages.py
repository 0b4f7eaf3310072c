"""What the CLI says when a chain does not verify, and what it does not say (raw Python warnings).

Every case runs a real chain: a loopback TLS server verified by OpenSSL (``check``,
``pin --connect``, ``lint --address``) or a chain file verified by ``cryptography``
(``lint --chain``). Each translation is checked together with its absence of the verifier's own
words, and the untranslated twin (``--json``, an unknown message) keeps them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from _support.pki import PKI, PKIFiles, new_root, spki_pin
from _support.servers import TLSServer
from certpin import Pin
from certpin.cli.main import main
from certpin.cli.messages import explain

DATA = Path(__file__).resolve().parents[1] / "data" / "chromium-spki-2016"
SYSTEM = "the chain does not verify against the system CA store (for a private CA pass --cafile)"


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _policy(tmp_path: Path, host: str, *pins: str) -> Path:
    pins = pins or (str(Pin(os.urandom(32))), str(Pin(os.urandom(32))))
    path = tmp_path / "pins.json"
    path.write_text(json.dumps({"domains": {host: {"pins": list(pins)}}}))
    return path


# -- live connections: OpenSSL's words -----------------------------------------------------------


def test_check_private_ca_without_cafile(capsys, tmp_path, pki: PKI, server: TLSServer):
    policy = _policy(tmp_path, "localhost", spki_pin(pki.root), str(Pin(os.urandom(32))))
    code, out, err = _run(
        capsys, "check", f"127.0.0.1:{server.port}", "--servername", "localhost", "--policy", policy
    )
    assert code == 3 and out == ""
    assert err == f"certpin: error: 127.0.0.1:{server.port}: {SYSTEM}\n"
    # The twin: with the private CA's root the same server checks fine.
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.pem())
    code, out, err = _run(
        capsys,
        "check",
        f"127.0.0.1:{server.port}",
        "--servername",
        "localhost",
        "--policy",
        policy,
        "--cafile",
        root,
    )
    assert code == 0, err


def test_pin_connect_private_ca_without_cafile(capsys, server: TLSServer):
    code, out, err = _run(capsys, "pin", "--connect", f"localhost:{server.port}")
    assert code == 3 and out == ""
    assert err == f"certpin: error: localhost:{server.port}: {SYSTEM}\n"
    assert "issuer" not in err


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[TLSServer]:
    """A server whose certificate signs itself: what a default appliance certificate is."""
    own = new_root("localhost")
    certfile, keyfile = tmp_path / "self.pem", tmp_path / "self.key"
    certfile.write_bytes(own.pem())
    keyfile.write_bytes(own.key_pem())
    with TLSServer(certfile, keyfile) as srv:
        yield srv


def test_self_signed_server(capsys, tmp_path, self_signed_server: TLSServer):
    code, out, err = _run(capsys, "pin", "--connect", f"localhost:{self_signed_server.port}")
    assert code == 3 and out == ""
    assert "the certificate is self-signed: no CA in the system CA store vouches for it" in err
    assert "pass it with --cafile" in err and "self-signed certificate\n" not in err


def test_not_yet_valid_leaf(capsys, tmp_path, pki: PKI, tmp_pki_files: PKIFiles):
    now = dt.datetime.now(dt.UTC)
    leaf = pki.intermediate.issue_leaf("localhost", not_before=now + dt.timedelta(days=2))
    with TLSServer(*leaf.write(tmp_path / "future")) as srv:
        code, _out, err = _run(
            capsys, "pin", "--connect", f"localhost:{srv.port}", "--cafile", tmp_pki_files.root_ca
        )
    assert code == 3
    assert err.endswith(
        "a certificate of the chain is not valid yet (check this machine's clock)\n"
    )


def test_lint_live_finding_is_translated_in_text_not_in_json(
    capsys, tmp_path, pki: PKI, server: TLSServer
):
    policy = _policy(tmp_path, "localhost")
    address = ["--address", f"localhost=127.0.0.1:{server.port}"]
    code, out, _err = _run(capsys, "lint", policy, *address)
    assert code == 1
    assert f"CP208 error [localhost] no-verified-chain: 127.0.0.1:{server.port}: {SYSTEM}" in out
    code, out, _err = _run(capsys, "lint", policy, *address, "--json")
    (finding,) = [f for f in json.loads(out)["findings"] if f["rule"] == "CP208"]
    assert "unable to get local issuer certificate" in finding["message"]  # the library's data


# -- chain files: cryptography's words -----------------------------------------------------------


def _lint_chain(capsys, tmp_path: Path, host: str, chain: bytes, *extra: object):
    chain_file = tmp_path / "chain.pem"
    chain_file.write_bytes(chain)
    policy = _policy(tmp_path, host)
    return _run(capsys, "lint", policy, "--chain", f"{host}={chain_file}", *extra)


def test_lint_chain_private_ca_without_cafile(capsys, tmp_path, pki: PKI):
    code, out, err = _lint_chain(capsys, tmp_path, "localhost", pki.leaf.chain_pem())
    assert code == 2 and out == ""
    assert err == f"certpin: error: {tmp_path / 'chain.pem'}: {SYSTEM}\n"
    assert "candidates exhausted" not in err


def test_lint_chain_other_ca(capsys, tmp_path, pki: PKI):
    other = tmp_path / "other-root.pem"
    other.write_bytes(new_root("Other Root").pem())
    code, _out, err = _lint_chain(
        capsys, tmp_path, "localhost", pki.leaf.chain_pem(), "--cafile", other
    )
    assert code == 2
    assert err.endswith(f"the chain does not verify against the CA certificates in {other}\n")


def test_lint_chain_expired_leaf(capsys, tmp_path, pki: PKI, tmp_pki_files: PKIFiles):
    now = dt.datetime.now(dt.UTC)
    leaf = pki.intermediate.issue_leaf(
        "localhost", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )
    code, _out, err = _lint_chain(
        capsys, tmp_path, "localhost", leaf.chain_pem(), "--cafile", tmp_pki_files.root_ca
    )
    assert code == 2
    assert "a certificate of the chain (CN=localhost,O=certpin tests) has expired or is not " in err
    assert "validation time" not in err


def test_lint_chain_wrong_name(capsys, tmp_path, pki: PKI, tmp_pki_files: PKIFiles):
    code, _out, err = _lint_chain(
        capsys, tmp_path, "api.example.com", pki.leaf.chain_pem(), "--cafile", tmp_pki_files.root_ca
    )
    assert code == 2
    assert err.endswith(
        "the certificate is not valid for 'api.example.com': it was issued for other names\n"
    )
    assert "subjectAltName" not in err


def test_lint_chain_that_verifies_is_not_an_error(capsys, tmp_path, pki, tmp_pki_files):
    code, out, err = _lint_chain(
        capsys, tmp_path, "localhost", pki.leaf.chain_pem(), "--cafile", tmp_pki_files.root_ca
    )
    assert code in (0, 1) and "certpin: error" not in err  # findings, not a failure
    assert "with a verified chain" in out


# -- explain() on its own -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "pins.toml: domains.x: no such field",
        "host:443: cannot connect: Connection refused",
        "host:443: timed out after 10 s",
        # A verifier failure this module does not know: its words are all the user gets.
        "host:443: certificate verification failed for 'host': certificate revoked",
    ],
)
def test_explain_leaves_other_messages_alone(message: str):
    assert explain(message) == message
    assert explain(message, "ca.pem") == message


def test_explain_keeps_where_and_says_which_store():
    message = (
        "[::1]:8443: certificate verification failed for 'api.example.com': "
        "unable to get local issuer certificate"
    )
    assert explain(message) == f"[::1]:8443: {SYSTEM}"
    assert explain(message, "corp.pem") == (
        "[::1]:8443: the chain does not verify against the CA certificates in corp.pem"
    )


# -- no raw Python warnings on the terminal ------------------------------------------------------


def _legacy_root() -> Path:
    """A 2016 root with a non-positive serial number: cryptography warns when it loads it."""
    path = DATA / "GoDaddyRoot_G2.pem"
    with pytest.warns(UserWarning, match="serial number"):  # the premise of the test
        x509.load_pem_x509_certificate(path.read_bytes()).serial_number  # noqa: B018
    return path


@pytest.mark.slow
@pytest.mark.parametrize("show", [False, True], ids=["default", "PYTHONWARNINGS=default"])
def test_dependency_warnings_stay_off_the_terminal(tmp_path: Path, pki: PKI, show: bool):
    # The CA file holds the legacy root next to the test root: `lint --chain` loads every
    # anchor of it to verify the chain, as it does with a system store holding such a root.
    cafile = tmp_path / "cas.pem"
    cafile.write_bytes(_legacy_root().read_bytes() + pki.root.pem())
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.leaf.chain_pem())
    policy = _policy(tmp_path, "localhost", spki_pin(pki.intermediate), str(Pin(os.urandom(32))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if show:  # the user asked for warnings: they get them (the twin that proves the premise)
        env["PYTHONWARNINGS"] = "default"
    proc = subprocess.run(
        [sys.executable, "-m", "certpin", "lint", str(policy), "--cafile", str(cafile)]
        + ["--chain", f"localhost={chain}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 with a verified chain" in proc.stdout
    if show:
        assert "CryptographyDeprecationWarning" in proc.stderr
    else:
        assert "Warning" not in proc.stderr
        assert proc.stderr == ""
