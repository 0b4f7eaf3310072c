"""certpin bundle keygen | sign | kill-switch | verify | serve (in-process and subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _dyn import BACKUP, policy_doc

from _support.pki import PKI, PKIFiles, spki_pin
from certpin.cli.main import main


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    assert main(["bundle", "keygen", "--key", str(key), "--pub", str(pub), "--alg", "Ed25519"]) == 0
    return key, pub


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "pins.json"
    path.write_text(
        json.dumps(policy_doc({"api.example.com": [BACKUP, "sha256/" + "A" * 43 + "="]}))
    )
    return path


def test_keygen_sign_verify(
    keys: tuple[Path, Path], policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = keys
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert main(["bundle", "keygen", "--key", str(key), "--pub", str(pub)]) == 2  # no overwrite
    out = tmp_path / "b.jws"
    assert (
        main(
            [
                "bundle",
                "sign",
                str(policy_file),
                "--key",
                str(key),
                "--version",
                "3",
                "--expires",
                "30d",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["bundle", "verify", str(out), "--trust", str(pub), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["valid"] and info["version"] == 3 and info["domains"] == ["api.example.com"]
    assert main(["bundle", "verify", str(out), "--trust", str(pub), "--min-version", "4"]) == 1
    assert "REJECTED" in capsys.readouterr().out
    other_key, other_pub = tmp_path / "o.pem", tmp_path / "o.pub"
    main(["bundle", "keygen", "--key", str(other_key), "--pub", str(other_pub)])
    assert main(["bundle", "verify", str(out), "--trust", str(other_pub), "--json"]) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["reason"] == "unknown_kid"
    assert main(["bundle", "verify", str(out)]) == 2  # --trust missing


def test_kill_switch_verb(
    keys: tuple[Path, Path], policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = keys
    out = tmp_path / "k.jws"
    args = [
        "bundle",
        "kill-switch",
        str(policy_file),
        "--key",
        str(key),
        "--version",
        "4",
        "--expires",
        "30d",
        "--reason",
        "INC-1",
        "-o",
        str(out),
    ]
    assert main([*args, "--domain", "api.example.com", "--until", "7d"]) == 0
    capsys.readouterr()
    assert main(["bundle", "verify", str(out), "--trust", str(pub)]) == 0
    assert "KILL SWITCH" in capsys.readouterr().out
    assert main([*args, "--all", "--until", "31d"]) == 2  # more than 30 days
    assert main([*args, "--until", "7d"]) == 2  # neither --domain nor --all
    assert main([*args, "--all", "--domain", "x.example", "--until", "7d"]) == 2


def test_sign_preflight_refuses_lockout(
    keys: tuple[Path, Path], policy_file: Path, tmp_path: Path, tmp_pki_files: PKIFiles
) -> None:
    from _support.servers import TLSServer

    key, _ = keys
    doc = policy_doc({"127.0.0.1": [BACKUP, "sha256/" + "A" * 43 + "="]})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as srv:
        base = [
            "bundle",
            "sign",
            str(bad),
            "--key",
            str(key),
            "--version",
            "1",
            "--expires",
            "30d",
            "--connect",
            f"127.0.0.1:{srv.port}",
            "--cafile",
            str(tmp_pki_files.root_ca),
        ]
        assert main([*base, "-o", str(tmp_path / "x.jws")]) == 1
        assert not (tmp_path / "x.jws").exists()
        assert main([*base, "--force", "-o", str(tmp_path / "x.jws")]) == 0


def _sign_args(policy: Path, key: Path, out: Path, *extra: str) -> list[str]:
    return [
        "bundle",
        "sign",
        str(policy),
        "--key",
        str(key),
        "--version",
        "1",
        "--expires",
        "30d",
        "-o",
        str(out),
        *extra,
    ]


def test_sign_preflight_with_chain_files(
    keys: tuple[Path, Path],
    tmp_path: Path,
    tmp_pki_files: PKIFiles,
    pki: PKI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, _ = keys
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(policy_doc({"localhost": [spki_pin(pki.intermediate.cert), BACKUP]}))
    )
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(policy_doc({"localhost": [BACKUP, "sha256/" + "A" * 43 + "="]})))
    chain = [
        "--chain",
        f"localhost={tmp_pki_files.certfile}",
        "--cafile",
        str(tmp_pki_files.root_ca),
    ]
    out = tmp_path / "b.jws"

    assert main(_sign_args(good, key, out, *chain)) == 0
    assert out.exists()
    assert "pre-flight localhost (file " in capsys.readouterr().err

    out.unlink()
    assert main(_sign_args(stale, key, out, *chain)) == 1  # the chain is not pinned: lock-out
    err = capsys.readouterr().err
    assert "localhost" in err and "refusing to sign" in err and not out.exists()
    assert main(_sign_args(stale, key, out, *chain, "--force")) == 0
    assert out.exists() and "signing anyway" in capsys.readouterr().err

    # The rollout policy is checked too: a good policy with a locking-out rollout is refused.
    out.unlink()
    rollout = ["--rollout", str(stale), "--rollout-id", "r1", "--rollout-percent", "10"]
    assert main(_sign_args(good, key, out, *chain, *rollout)) == 1
    assert "stale.json: failed" in capsys.readouterr().err and not out.exists()
    assert main(_sign_args(good, key, out, *chain, *rollout, "--force")) == 0


def test_sign_preflight_chain_errors_exit_2(
    keys: tuple[Path, Path],
    tmp_path: Path,
    tmp_pki_files: PKIFiles,
    rogue_pki_files: PKIFiles,
    pki: PKI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, _ = keys
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(policy_doc({"localhost": [spki_pin(pki.intermediate.cert), BACKUP]}))
    )
    out = tmp_path / "b.jws"
    ca = ["--cafile", str(tmp_pki_files.root_ca)]
    # a chain that does not verify against the CA file (a MITM's chain): named, exit 2
    assert (
        main(_sign_args(good, key, out, "--chain", f"localhost={rogue_pki_files.certfile}", *ca))
        == 2
    )
    assert "does not verify" in capsys.readouterr().err
    # a domain that is not a key of the policy
    assert (
        main(_sign_args(good, key, out, "--chain", f"other.example={tmp_pki_files.certfile}", *ca))
        == 2
    )
    assert "not a key of" in capsys.readouterr().err
    # a missing file, and a spec without "="
    assert (
        main(_sign_args(good, key, out, "--chain", f"localhost={tmp_path / 'nope.pem'}", *ca)) == 2
    )
    assert "no such file" in capsys.readouterr().err
    assert main(_sign_args(good, key, out, "--chain", "localhost", *ca)) == 2
    assert "DOMAIN=VALUE" in capsys.readouterr().err
    assert not out.exists()


def test_bad_inputs_exit_2(keys: tuple[Path, Path], policy_file: Path, tmp_path: Path) -> None:
    key, _ = keys
    assert (
        main(
            [
                "bundle",
                "sign",
                str(policy_file),
                "--key",
                str(key),
                "--version",
                "1",
                "--expires",
                "soon",
            ]
        )
        == 2
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"domains": {"a.example": {"pins": []}}}')
    assert (
        main(["bundle", "sign", str(bad), "--key", str(key), "--version", "1", "--expires", "1d"])
        == 2
    )
    assert (
        main(
            [
                "bundle",
                "sign",
                str(policy_file),
                "--key",
                str(policy_file),
                "--version",
                "1",
                "--expires",
                "1d",
            ]
        )
        == 2
    )


def test_serve_subprocess_etag_and_verify_subprocess(
    keys: tuple[Path, Path], policy_file: Path, tmp_path: Path
) -> None:
    key, pub = keys
    www = tmp_path / "www"
    www.mkdir()
    assert (
        main(
            [
                "bundle",
                "sign",
                str(policy_file),
                "--key",
                str(key),
                "--version",
                "1",
                "--expires",
                "2d",
                "-o",
                str(www / "b.jws"),
            ]
        )
        == 0
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "certpin", "bundle", "serve", str(www), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = line.split(" at ")[1].strip() + "b.jws"
        with urllib.request.urlopen(url, timeout=5) as resp:
            etag = resp.headers["ETag"]
            assert resp.read() == (www / "b.jws").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(
                urllib.request.Request(url, headers={"If-None-Match": etag}), timeout=5
            )
        assert err.value.code == 304
        err.value.close()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url.replace("b.jws", ""), timeout=5)
        assert err.value.code == 404  # no listings
        err.value.close()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()  # type: ignore[union-attr]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "certpin",
            "bundle",
            "verify",
            str(www / "b.jws"),
            "--trust",
            str(pub),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "VALID" in out.stdout
    (www / "b.jws").write_text((www / "b.jws").read_text()[:-5])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "certpin",
            "bundle",
            "verify",
            str(www / "b.jws"),
            "--trust",
            str(pub),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
