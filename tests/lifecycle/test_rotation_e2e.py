"""A real key rotation on loopback: spare key pre-pinned, server swapped, clients keep working;
and a rotation without the backup, flagged by `rotate plan` before it breaks a real client."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

import certpin
from _support.pki import PKI, PKIFiles, spki_pin
from _support.servers import DEFAULT_BODY, TLSServer

from ._helpers import in_days, random_pin, run, write_policy


def _get(policy_file: Path, server: TLSServer, cafile: Path) -> bytes:
    policy = certpin.Policy.from_file(policy_file)
    ctx = certpin.create_default_context(policy, cafile=str(cafile))
    with urllib.request.urlopen(server.url(), context=ctx, timeout=10) as response:
        return response.read()


def _served_leaf_pin(server: TLSServer, cafile: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return str(certpin.Pin.for_certificate(der))


def test_rotation_with_and_without_backup(
    capsys, tmp_path: Path, pki: PKI, tmp_pki_files: PKIFiles, server: TLSServer
):
    root = tmp_pki_files.root_ca
    old_pin = spki_pin(pki.leaf)

    # 1. A spare key, generated before any certificate exists for it.
    code, out, err = run(capsys, "keygen", "-o", tmp_path / "spare", "--san", "localhost")
    assert code == 0, err
    spare_pin = out.strip()
    assert (tmp_path / "spare" / "pin.txt").read_text().strip() == spare_pin

    # 2. v1 pins the live key and the spare; v2 (written by `rotate next`, checked against the
    #    live chain) adds an RSA spare for crypto agility. v0 was shipped without a real backup.
    v1 = write_policy(
        tmp_path / "v1.json",
        {"localhost": {"pins": [old_pin, spare_pin], "expires": in_days(300)}},
        version=1,
    )
    code, out, err = run(capsys, "keygen", "-o", tmp_path / "spare2", "--type", "rsa2048")
    assert code == 0, err
    rsa_pin = out.strip()
    code, out, err = run(
        capsys, "rotate", "next", v1, "--add-pin", f"{rsa_pin}:localhost",
        "--address", f"localhost=127.0.0.1:{server.port}", "--cafile", root,
        "-o", tmp_path / "v2.toml",
    )  # fmt: skip
    assert code == 0, err
    v2 = tmp_path / "v2.toml"
    assert certpin.Policy.from_file(v2).version == 2
    assert set(map(str, certpin.Policy.from_file(v2).domains["localhost"].pins)) == {
        old_pin, spare_pin, rsa_pin,
    }  # fmt: skip
    v0 = write_policy(
        tmp_path / "v0.json",
        {"localhost": {"pins": [old_pin, random_pin()], "expires": in_days(300)}},
        version=0,
    )

    # Every version works against the old chain.
    for policy in (v0, v1, v2):
        assert _get(policy, server, root) == DEFAULT_BODY
    # 3. The next certificate, for the spare key, from the same CA.
    spare_key = serialization.load_pem_private_key(
        (tmp_path / "spare" / "key.pem").read_bytes(), None
    )
    new_leaf = pki.intermediate.issue_leaf("localhost", "127.0.0.1", key=spare_key)
    certfile, keyfile = new_leaf.write(tmp_path / "new")
    assert spki_pin(new_leaf) == spare_pin

    # 4. Plan before switching: v1 and v2 are safe, v0 breaks and is named with its share.
    code, out, err = run(
        capsys, "rotate", "plan", "--deployed", v1, "--deployed", v2, "--next-chain", certfile,
        "--cafile", root,
    )  # fmt: skip
    assert code == 0, err + out
    assert "safe: no deployed version breaks" in out
    code, out, err = run(
        capsys, "rotate", "plan", "--deployed", v0, "--deployed", v1, "--deployed", v2,
        "--next-chain", certfile, "--cafile", root, "--share", "v0=0.2", "--json",
    )  # fmt: skip
    assert code == 1, err
    plan = json.loads(out)
    assert plan["breaking"] == ["v0"]
    assert plan["broken_share"] == pytest.approx(0.2)
    assert any(spare_pin in line for line in plan["playbook"])

    # 5. Swap the server to the spare key's certificate.
    server.set_certificate(certfile, keyfile)
    assert _served_leaf_pin(server, root) == spare_pin
    # Clients on v1 and v2 keep working ...
    assert _get(v1, server, root) == DEFAULT_BODY
    assert _get(v2, server, root) == DEFAULT_BODY
    # ... and the client on v0, as the plan said, is locked out.
    with pytest.raises(urllib.error.URLError) as info:
        _get(v0, server, root)
    assert isinstance(info.value.reason, certpin.PinValidationError)
    assert spare_pin in str(info.value.reason)
