"""``certpin export`` / ``certpin import`` in-process via main(), and once as a subprocess."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _support.pki import make_pki
from certpin import Pin, Policy
from certpin.cli.main import main


def _pin() -> str:
    return "sha256/" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "pins.toml"
    path.write_text(
        f'version = 3\n[domains."api.example.com"]\npins = ["{_pin()}", "{_pin()}"]\n'
        f'[domains."*.example.net"]\npins = ["{_pin()}", "{_pin()}"]\n'
    )
    return path


def test_export_then_import_round_trips_through_files(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "Pins.kt"
    assert main(["export", "--format", "okhttp-kotlin", str(policy_file), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
    back = tmp_path / "back.toml"
    assert main(["import", "-f", "okhttp-kotlin", str(out), "-o", str(back)]) == 0
    assert Policy.from_file(back) == Policy.from_file(policy_file)


def test_export_prints_warnings_and_strict_fails_without_writing(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nsc.xml"
    assert main(["export", "-f", "android-nsc", str(policy_file), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "certpin: warning: *.example.net: " in err and "wider" in err
    assert out.exists()
    out.unlink()
    assert main(["export", "-f", "android-nsc", str(policy_file), "-o", str(out), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "--strict: nothing written" in err
    assert not out.exists()


def test_import_warnings_go_to_stderr_and_into_the_toml_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nsc = tmp_path / "nsc.xml"
    pin = _pin().removeprefix("sha256/")
    nsc.write_text(
        "<network-security-config><domain-config><domain>a.example.com</domain>"
        f'<pin-set><pin digest="SHA-256">{pin}</pin></pin-set></domain-config>'
        "</network-security-config>"
    )
    assert main(["import", "-f", "android-nsc", str(nsc)]) == 0
    out, err = capsys.readouterr()
    assert "allow_single_pin" in err
    assert "# warning: a.example.com: only one pin" in out
    assert "allow_single_pin = true" in out
    assert main(["import", "-f", "android-nsc", str(nsc), "--strict"]) == 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "-f", "curl", "--okhttp", "3"], "--okhttp only applies"),
        (["export", "-f", "curl", "--identifier", "x"], "only apply to --format mobileconfig"),
        (["export", "-f", "nope"], "Invalid value for '--format'"),
        (["export", "-f", "mobileconfig"], "needs the pinned CA certificates"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, str(policy_file)]) == 2
    assert message in capsys.readouterr().err


def test_bad_input_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "Pins.java"
    bad.write_text(
        '// pins\nnew CertificatePinner.Builder()\n  .add("a.example.com", "sha256/short")\n'
    )
    assert main(["import", "-f", "okhttp-java", str(bad)]) == 2
    assert f"certpin: error: {bad}: line 3: pin 'sha256/short'" in capsys.readouterr().err
    policy = tmp_path / "bad.toml"
    policy.write_text('[domains."a.example.com"]\npins = ["nope"]\n')
    assert main(["export", "-f", "curl", str(policy)]) == 2
    assert 'domains."a.example.com".pins[0]' in capsys.readouterr().err


def test_mobileconfig_cli_refuses_an_unpinned_cert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki()
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.pem())
    policy = tmp_path / "pins.toml"
    pins = [str(Pin.for_certificate(pki.root.der())), _pin()]
    policy.write_text(f'[domains."localhost"]\nca_pins = {pins!r}\n'.replace("'", '"'))
    out = tmp_path / "anchors.mobileconfig"
    argv = ["export", "-f", "mobileconfig", str(policy), "--cert", str(root), "-o", str(out)]
    assert main(argv) == 0
    assert out.read_bytes().startswith(b"<?xml")
    other = tmp_path / "other.pem"
    other.write_bytes(make_pki(root_name="Other Root").root.pem())
    capsys.readouterr()
    assert main([*argv[:-2], "--cert", str(other)]) == 2
    assert "is not pinned by the policy" in capsys.readouterr().err


@pytest.mark.slow
def test_python_m_certpin_export(policy_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "certpin", "export", "-f", "hpkp", str(policy_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Public-Key-Pins: pin-sha256=" in proc.stdout
    assert "wider" in proc.stderr


def test_import_header_of_a_hostile_file_name_is_valid_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    path = tmp_path / 'a\x01b\n[domains."evil.example"]\n.sh'
    path.write_text(
        f"curl --pinnedpubkey 'sha256//{_pin()[7:]};sha256//{_pin()[7:]}' https://a.example/\n"
    )
    assert main(["import", "-f", "curl", str(path)]) == 0
    out = capsys.readouterr().out
    assert list(tomllib.loads(out)["domains"]) == ["a.example"]
