"""``certpin check``, ``monitor`` and ``inventory --live`` report revocation: a stapled response
from ``openssl s_server -status_file`` and a CRL over loopback HTTP, each with its twin."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certpin.cli.main import main
from lifecycle._revocation import CA, OPENSSL, CRLServer, free_port, ocsp_response_file, tls_server

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def _pin(der_spki: bytes) -> str:
    return "sha256/" + base64.b64encode(hashlib.sha256(der_spki).digest()).decode()


def _leaf_pin(leaf) -> str:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization

    spki = leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _pin(spki)


def _setup(tmp_path: Path, pinned: bool):  # type: ignore[no-untyped-def]
    ca = CA()
    crl = CRLServer()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{free_port()}/", crl_url=crl.url())
    (tmp_path / "ca.pem").write_bytes(
        ca.cert.public_bytes(
            __import__("cryptography").hazmat.primitives.serialization.Encoding.PEM
        )
    )
    pins = [_leaf_pin(leaf) if pinned else "sha256/" + base64.b64encode(b"x" * 32).decode()]
    pins.append("sha256/" + base64.b64encode(b"b" * 32).decode())
    policy = tmp_path / "pins.json"
    policy.write_text(json.dumps({"domains": {"localhost": {"pins": pins}}}))
    return ca, crl, leaf, policy


def _check(tmp_path: Path, port: int, policy: Path, *extra: str) -> int:
    """``certpin check 127.0.0.1:PORT --servername localhost`` with `policy` and the test CA."""
    return main(
        [
            "check",
            f"127.0.0.1:{port}",
            "--servername",
            "localhost",
            "--policy",
            str(policy),
            "--cafile",
            str(tmp_path / "ca.pem"),
            *extra,
        ]
    )


@pytest.mark.parametrize("revoked", [False, True])
def test_check_staple(tmp_path: Path, capsys: pytest.CaptureFixture[str], revoked: bool) -> None:
    pytest.importorskip("OpenSSL", reason="the revocation extra (pyOpenSSL) is not installed")
    ca, _crl, leaf, policy = _setup(tmp_path, pinned=True)
    status = ocsp_response_file(tmp_path, ca, leaf, revoked=revoked)
    with tls_server(tmp_path, ca, leaf, status_file=status) as port:
        code = _check(tmp_path, port, policy, "--json")
    out, err = capsys.readouterr()
    assert out, err
    doc = json.loads(out)
    (rev,) = doc["revocation"]
    assert rev["source"] == "staple"
    assert doc["status"] == "ok"
    if revoked:
        assert code == 1
        assert rev["status"] == "revoked"
        assert "rotate to the backup key" in doc["revocation_alerts"][0]
    else:
        assert code == 0
        assert rev["status"] == "good" and doc["revocation_alerts"] == []
    assert doc["scts"]["count"] == 0


def test_check_revoked_but_not_pinned_is_no_alert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A revoked certificate no pin covers is reported, not an alert (the pins fail anyway)."""
    ca, crl, leaf, policy = _setup(tmp_path, pinned=False)
    policy.write_text(json.dumps({"domains": {}}))
    with crl, tls_server(tmp_path, ca, leaf) as port:
        crl.files["/ca.crl"] = ca.crl([leaf.cert])
        code = _check(tmp_path, port, policy)
    out = capsys.readouterr().out
    assert code == 0
    assert "0  revoked" in out and "ALERT" not in out


def test_check_no_revocation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca, crl, leaf, policy = _setup(tmp_path, pinned=True)
    with crl, tls_server(tmp_path, ca, leaf) as port:
        crl.files["/ca.crl"] = ca.crl([leaf.cert])
        code = _check(tmp_path, port, policy, "--json", "--no-revocation")
        assert crl.requests == 0
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["revocation"] is None


def _with_crl(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    revoked: bool,
    argv: Callable[[int, Path], list[str]],
) -> tuple[int, dict[str, Any]]:
    """``certpin ARGV --cafile CA --json`` (`argv` of the server's port and the policy) against
    the pinned leaf, its CRL listing it if `revoked`: the exit code and the JSON."""
    ca, crl, leaf, policy = _setup(tmp_path, pinned=True)
    with crl, tls_server(tmp_path, ca, leaf) as port:
        crl.files["/ca.crl"] = ca.crl([leaf.cert] if revoked else [])
        code = main([*argv(port, policy), "--cafile", str(tmp_path / "ca.pem"), "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("revoked", [False, True])
def test_monitor_crl(tmp_path: Path, capsys: pytest.CaptureFixture[str], revoked: bool) -> None:
    code, doc = _with_crl(
        tmp_path,
        capsys,
        revoked,
        lambda port, policy: ["monitor", f"localhost:{port}", "--policy", str(policy)],
    )
    (endpoint,) = doc["endpoints"]
    assert endpoint["revocation"][0]["source"] == "crl"
    if revoked:
        assert code == 1 and endpoint["status"] == "revoked"
        assert "rotate to the backup key" in endpoint["message"]
    else:
        assert code == 0 and endpoint["status"] == "ok"
        assert endpoint["revocation"][0]["status"] == "good"


@pytest.mark.parametrize("revoked", [False, True])
def test_inventory_live(tmp_path: Path, capsys: pytest.CaptureFixture[str], revoked: bool) -> None:
    code, doc = _with_crl(
        tmp_path,
        capsys,
        revoked,
        lambda port, policy: ["inventory", str(policy), "--address", f"localhost=127.0.0.1:{port}"],
    )
    (domain,) = doc["domains"]
    assert code == 0
    assert domain["revocation"][0]["status"] == ("revoked" if revoked else "good")
    assert bool(domain["revocation_alerts"]) is revoked
