"""``certpin pin``, ``certpin --version`` and ``python -m certpin``, run in-process via main()."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

import certpin
from _support.pki import PKI, PKIFiles, make_key, spki_pin
from _support.servers import TLSServer
from certpin.cli.main import main
from certpin.cli.options import parse_target

PASSWORD = b"s3cret passphrase"
JSON_FIELDS = {
    "pin",
    "kind",
    "subject",
    "issuer",
    "not_after",
    "source",
    "position",
    "cert_sha256",
    "key_type",
}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out: str) -> list[dict[str, str]]:
    header, *lines = out.splitlines()
    columns = header.split("\t")
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in lines]


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"certpin {certpin.__version__}"


def test_pin_chain_file_plain(capsys, pki: PKI, tmp_pki_files: PKIFiles):
    code, out, err = _run(capsys, "pin", str(tmp_pki_files.certfile), str(tmp_pki_files.root_ca))
    assert code == 0, err
    rows = _rows(out)
    assert [r["PIN"] for r in rows] == [
        spki_pin(pki.leaf),
        spki_pin(pki.intermediate),
        spki_pin(pki.root),
    ]
    assert [r["POS"] for r in rows] == ["0", "1", "0"]
    assert [r["SOURCE"] for r in rows] == [str(tmp_pki_files.certfile)] * 2 + [
        str(tmp_pki_files.root_ca)
    ]
    assert rows[0]["SUBJECT"] == pki.leaf.cert.subject.rfc4514_string()
    assert rows[0]["ISSUER"] == pki.intermediate.cert.subject.rfc4514_string()
    assert rows[0]["KIND"] == "certificate" and rows[0]["KEY"] == "EC P-256"
    assert rows[0]["CERT_SHA256"].startswith("cert-sha256/")
    assert rows[0]["NOT_AFTER"].endswith("Z")


def test_pin_json(capsys, pki: PKI, tmp_pki_files: PKIFiles):
    code, out, _ = _run(capsys, "pin", "--json", str(tmp_pki_files.certfile))
    assert code == 0
    items = json.loads(out)
    assert len(items) == 2
    for item in items:
        assert JSON_FIELDS <= item.keys()
    leaf = items[0]
    assert leaf["pin"] == spki_pin(pki.leaf)
    assert leaf["kind"] == "certificate" and leaf["position"] == 0 and items[1]["position"] == 1
    assert leaf["source"] == str(tmp_pki_files.certfile)
    expected_after = pki.leaf.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leaf["not_after"] == expected_after
    assert leaf["cert_sha256"] == str(certpin.Pin.certificate_fingerprint(pki.leaf.der()))
    assert leaf["key_type"] == "EC P-256"


def test_pin_all_algorithms(capsys, tmp_pki_files: PKIFiles):
    code, out, _ = _run(capsys, "pin", "--all-algorithms", "--json", str(tmp_pki_files.leaf_cert))
    assert code == 0
    (item,) = json.loads(out)
    assert item["pins"]["sha256"] == item["pin"]
    assert item["pins"]["sha384"].startswith("sha384/")
    assert item["pins"]["sha512"].startswith("sha512/")
    code, out, _ = _run(capsys, "pin", "--all-algorithms", str(tmp_pki_files.leaf_cert))
    (row,) = _rows(out)
    assert row["PIN_SHA384"] == item["pins"]["sha384"]


def _encrypted_key(tmp_path: Path) -> tuple[Path, str]:
    key = make_key("ed25519")
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD),
        )
    )
    return path, spki_pin(key)


def test_pin_encrypted_key_password_file_and_env(capsys, tmp_path: Path, monkeypatch):
    path, expected = _encrypted_key(tmp_path)
    password_file = tmp_path / "password.txt"
    password_file.write_bytes(PASSWORD + b"\n")
    code, out, err = _run(capsys, "pin", "--password-file", str(password_file), str(path))
    assert code == 0, err
    assert _rows(out)[0]["PIN"] == expected
    monkeypatch.setenv("KEY_PASSWORD", PASSWORD.decode())
    code, out, _ = _run(capsys, "pin", "--password-env", "KEY_PASSWORD", str(path))
    assert code == 0 and _rows(out)[0]["PIN"] == expected


def test_pin_encrypted_key_without_password(capsys, tmp_path: Path):
    path, _ = _encrypted_key(tmp_path)
    code, out, err = _run(capsys, "pin", str(path))
    assert code == 2 and out == ""
    assert f"{path}, line 1:" in err and "--password-file" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [b"", b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nMIIB\n"],
    ids=["empty", "garbage", "truncated"],
)
def test_pin_bad_file_exits_2_naming_file_and_line(capsys, tmp_path: Path, content: bytes):
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    code, out, err = _run(capsys, "pin", str(path))
    assert code == 2 and out == ""
    assert f"{path}, line 1:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["pin"],
        ["pin", "--bogus", "x"],
        ["pin", "a.pem", "--connect", "localhost"],
        ["pin", "a.pem", "--password-env", "A", "--password-file", __file__],
        ["pin", "a.pem", "--password-env", "CERTPIN_TEST_UNSET_VARIABLE"],
        ["pin", "--connect", "localhost:0"],
        ["pin", "--connect", "a..b"],
        ["pin", "--connect", "x" * 64 + ".example"],
        ["pin", "--connect", "localhost", "--servername", "a..b"],
        ["pin", "--connect", "localhost", "--servername", ""],
        ["nosuchverb"],
    ],
)
def test_pin_usage_errors_exit_2(capsys, argv: list[str]):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err and "Traceback" not in err


def test_pin_connect_shows_verified_chain(capsys, pki: PKI, tmp_pki_files, server: TLSServer):
    code, out, err = _run(
        capsys,
        "pin",
        "--connect",
        f"127.0.0.1:{server.port}",
        "--cafile",
        str(tmp_pki_files.root_ca),
        "--servername",
        "localhost",
        "--json",
    )
    assert code == 0, err
    items = json.loads(out)
    # The root is not sent by the server but is part of the verified chain (RFC 7469 §2.6).
    assert [i["pin"] for i in items] == [
        spki_pin(pki.leaf),
        spki_pin(pki.intermediate),
        spki_pin(pki.root),
    ]
    assert [i["served"] for i in items] == [True, True, False]
    assert [i["position"] for i in items] == [0, 1, 2]
    assert {i["source"] for i in items} == {f"127.0.0.1:{server.port}"}
    code, out, _ = _run(
        capsys,
        "pin",
        "--connect",
        f"localhost:{server.port}",
        "--cafile",
        str(tmp_pki_files.root_ca),
    )
    assert code == 0
    assert [r["SERVED"] for r in _rows(out)] == ["yes", "yes", "no"]


def test_pin_connect_untrusted_exits_3(capsys, tmp_pki_files, rogue_server: TLSServer):
    code, out, err = _run(
        capsys,
        "pin",
        "--connect",
        f"127.0.0.1:{rogue_server.port}",
        "--cafile",
        str(tmp_pki_files.root_ca),
    )
    assert code == 3 and out == ""
    assert "the chain does not verify against the CA certificates in" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", ("example.com", 443)),
        ("example.com:8443", ("example.com", 8443)),
        ("[::1]:443", ("::1", 443)),
        ("[::1]", ("::1", 443)),
        ("::1", ("::1", 443)),
        ("https://example.com:444/path", ("example.com", 444)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_parse_target(text: str, expected: tuple[str, int]):
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", ":443", "host:0", "host:65536", "host:x", "[::1", "[nothost]:1", "http://a", "a..b"],
)
def test_parse_target_rejects(text: str):
    import click

    with pytest.raises(click.BadParameter):
        parse_target(text)


@pytest.mark.slow
def test_python_dash_m_pin_json(tmp_pki_files: PKIFiles, pki: PKI):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [sys.executable, "-m", "certpin", "pin", str(tmp_pki_files.leaf_cert), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    (item,) = json.loads(proc.stdout)
    assert item["pin"] == spki_pin(pki.leaf)


def test_pin_on_a_terminal_never_breaks_pins(capsys, monkeypatch, pki: PKI, tmp_pki_files):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "40")  # far narrower than a pin
    code = main(["pin", str(tmp_pki_files.certfile)])
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert code == 0
    assert re.search(rf"^  pin +{re.escape(spki_pin(pki.leaf))}$", out, re.MULTILINE)
    assert spki_pin(pki.intermediate) in out


@pytest.mark.slow
def test_importing_the_cli_stays_light():
    code = (
        "import sys, certpin.cli.main; "
        "heavy = {'rich', 'cryptography'} & {m.split('.')[0] for m in sys.modules}; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
