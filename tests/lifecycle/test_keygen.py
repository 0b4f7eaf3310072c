"""`certpin keygen`: spare key (0600, never overwritten, optional passphrase), CSR and pin."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from _support.pki import spki_pin

from ._helpers import run

KEY_TYPES = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384", "ed25519"]


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_pins_agree_with_certpin_pin_and_an_independent_hash(capsys, tmp_path, key_type):
    out_dir = tmp_path / "spare"
    code, out, err = run(capsys, "keygen", "-o", out_dir, "--type", key_type, "--json")
    assert code == 0, err
    doc = json.loads(out)
    pin = doc["pin"]
    assert (out_dir / "pin.txt").read_text() == pin + "\n"
    code, out, err = run(capsys, "pin", out_dir / "key.pem", out_dir / "csr.pem", "--json")
    assert code == 0, err
    assert [item["pin"] for item in json.loads(out)] == [pin, pin]
    key = serialization.load_pem_private_key((out_dir / "key.pem").read_bytes(), None)
    assert spki_pin(key) == pin
    csr = x509.load_pem_x509_csr((out_dir / "csr.pem").read_bytes())
    assert csr.is_signature_valid


def test_key_is_0600_even_with_a_permissive_umask(capsys, tmp_path):
    old = os.umask(0)
    try:
        code, _out, err = run(capsys, "keygen", "-o", tmp_path / "k")
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "k" / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700


def test_csr_carries_cn_and_sans(capsys, tmp_path):
    code, _out, err = run(
        capsys, "keygen", "-o", tmp_path, "--cn", "api.example.com",
        "--san", "api.example.com", "--san", "*.api.example.com", "--san", "192.0.2.7",
    )  # fmt: skip
    assert code == 0, err
    csr = x509.load_pem_x509_csr((tmp_path / "csr.pem").read_bytes())
    assert csr.subject.rfc4514_string() == "CN=api.example.com"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example.com", "*.api.example.com"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    # Without names: an empty subject and no SAN extension.
    code, _out, err = run(capsys, "keygen", "-o", tmp_path / "bare")
    assert code == 0, err
    bare = x509.load_pem_x509_csr((tmp_path / "bare" / "csr.pem").read_bytes())
    assert len(bare.subject) == 0 and len(bare.extensions) == 0


@pytest.mark.parametrize("existing", ["key.pem", "csr.pem", "pin.txt"])
def test_refuses_to_overwrite(capsys, tmp_path, existing):
    (tmp_path / existing).write_text("precious")
    code, out, err = run(capsys, "keygen", "-o", tmp_path)
    assert code == 2 and f"refusing to overwrite {tmp_path / existing}" in err and out == ""
    assert (tmp_path / existing).read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]  # nothing else written


def test_passphrase_file_encrypts_the_key(capsys, tmp_path):
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse\nignored second line\n")
    code, out, err = run(capsys, "keygen", "-o", tmp_path / "k", "--passphrase-file", secret)
    assert code == 0, err
    pin = out.strip()
    key = tmp_path / "k" / "key.pem"
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    code, _out, err = run(capsys, "pin", key)
    assert code == 2 and "encrypted" in err
    code, out, err = run(capsys, "pin", key, "--password-file", secret, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["pin"] == pin
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(key.read_bytes(), b"wrong")


def test_password_options_are_the_same_as_certpin_pin(capsys, tmp_path):
    # keygen reads its passphrase exactly as `certpin pin --password-file` does (one reader).
    secret = tmp_path / "pass.txt"
    secret.write_text("tr@iling space \r\nsecond\n")
    code, out, err = run(capsys, "keygen", "-o", tmp_path / "k", "--password-file", secret)
    assert code == 0, err
    key = (tmp_path / "k" / "key.pem").read_bytes()
    assert serialization.load_pem_private_key(key, b"tr@iling space ") is not None
    code, pin_out, err = run(capsys, "pin", tmp_path / "k" / "key.pem", "--password-file", secret)
    assert code == 0 and out.strip() in pin_out


def test_passphrase_env(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARE_PASS", "s3cret")
    code, _out, err = run(capsys, "keygen", "-o", tmp_path, "--passphrase-env", "SPARE_PASS")
    assert code == 0, err
    key = serialization.load_pem_private_key((tmp_path / "key.pem").read_bytes(), b"s3cret")
    assert key is not None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--passphrase-env", "CERTPIN_UNSET_VAR"], "CERTPIN_UNSET_VAR is not set"),
        (["--passphrase-file", "/nonexistent/pass"], "/nonexistent/pass"),
        (["--passphrase-file", "EMPTY"], "the first line is empty"),
        (["--passphrase-file", "EMPTY", "--passphrase-env", "X"], "not both"),
        (["--password-env", "EMPTY_VAR"], "environment variable EMPTY_VAR: is empty"),
        (["--type", "rsa1024"], "rsa1024"),
        (["--san", "bad host"], "--san 'bad host'"),
        (["--cn", "x" * 65], "1 to 64 characters"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(capsys, tmp_path, monkeypatch, args, expected):
    monkeypatch.setenv("EMPTY_VAR", "")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    code, _out, err = run(capsys, "keygen", "-o", tmp_path / "k", *args)
    assert code == 2 and expected in err
    assert not (tmp_path / "k").exists()


def test_python_m_certpin_keygen(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "certpin", "keygen", "-o", str(tmp_path), "--type", "p384"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (tmp_path / "pin.txt").read_text().strip()
    assert "mode 0600" in result.stderr
