"""``certpin check`` against real loopback TLS servers, in-process via main()."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.pki import PKI, PKIFiles, new_root, spki_pin
from _support.servers import TLSServer
from certpin import Pin
from certpin.cli.main import main


def _random_pin() -> str:
    return str(Pin(os.urandom(32)))


def _policy(tmp_path: Path, body: str, name: str = "pins.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def _rule(host: str, pins: list[str], **extra: str) -> str:
    lines = [f'[domains."{host}"]', f"pins = {json.dumps(pins)}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _check(
    capsys: pytest.CaptureFixture[str],
    server: TLSServer,
    cafile: Path,
    policy: Path,
    *extra: str,
    target: str | None = None,
) -> tuple[int, str, str]:
    argv = [
        "check",
        target or f"127.0.0.1:{server.port}",
        "--policy",
        str(policy),
        "--cafile",
        str(cafile),
        "--timeout",
        "10",
        *extra,
    ]
    if "--servername" not in extra:
        argv += ["--servername", "localhost"]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_match_exits_0(capsys, tmp_path, pki: PKI, tmp_pki_files: PKIFiles, server):
    # Backup pin first: the matching pin is the intermediate's.
    policy = _policy(tmp_path, _rule("localhost", [_random_pin(), spki_pin(pki.intermediate)]))
    code, out, err = _check(capsys, server, tmp_pki_files.root_ca, policy)
    assert code == 0, err
    assert out.startswith("OK")
    assert f"matched:  {spki_pin(pki.intermediate)}" in out
    assert "mode:     enforce" in out
    # The chain is the verified one, root included though the server did not send it.
    assert spki_pin(pki.root) in out and "[not sent by the server]" in out
    assert pki.leaf.cert.subject.rfc4514_string() in out
    assert f"{spki_pin(pki.intermediate)}  (chain position 1)" in out


def test_match_by_root_pin_json(capsys, tmp_path, pki: PKI, tmp_pki_files, server):
    document = {"domains": {"localhost": {"pins": [spki_pin(pki.root), _random_pin()]}}}
    policy = _policy(tmp_path, json.dumps(document), name="pins.json")
    code, out, err = _check(capsys, server, tmp_pki_files.root_ca, policy, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "ok" and result["mode"] == "enforce"
    assert result["matched_pin"] == spki_pin(pki.root)
    assert result["host"] == "localhost" and result["port"] == server.port
    assert [c["pin"] for c in result["chain"]] == [
        spki_pin(pki.leaf),
        spki_pin(pki.intermediate),
        spki_pin(pki.root),
    ]
    assert [c["served"] for c in result["chain"]] == [True, True, False]
    assert spki_pin(pki.root) in result["expected_pins"]


def test_target_by_name_uses_it_for_sni_and_rule(capsys, tmp_path, pki, tmp_pki_files, server):
    policy = _policy(tmp_path, _rule("localhost", [spki_pin(pki.leaf), _random_pin()]))
    cafile = str(tmp_pki_files.root_ca)
    code = main(["check", f"localhost:{server.port}", "--policy", str(policy), "--cafile", cafile])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"host:     localhost (localhost:{server.port})" in out
    assert server.server_names == ["localhost"]


def test_wrong_pin_exits_1(capsys, tmp_path, pki, tmp_pki_files, server):
    expected = [_random_pin(), _random_pin()]
    policy = _policy(tmp_path, _rule("localhost", expected))
    code, out, _ = _check(capsys, server, tmp_pki_files.root_ca, policy)
    assert code == 1
    assert out.startswith("FAILED") and "mode:     enforce" in out
    assert all(pin in out for pin in expected)
    assert spki_pin(pki.leaf) in out


def test_report_only_mismatch_exits_1_and_says_so(capsys, tmp_path, tmp_pki_files, server):
    policy = _policy(tmp_path, _rule("localhost", [_random_pin()], enforce="false"))
    code, out, _ = _check(capsys, server, tmp_pki_files.root_ca, policy)
    assert code == 1
    assert out.startswith("FAILED") and "report-only" in out
    code, out, _ = _check(capsys, server, tmp_pki_files.root_ca, policy, "--json")
    result = json.loads(out)
    assert code == 1 and result["mode"] == "report-only" and result["allowed"] is True


def test_unpinned_exits_0(capsys, tmp_path, tmp_pki_files, server):
    policy = _policy(tmp_path, _rule("other.example", [_random_pin(), _random_pin()]))
    code, out, _ = _check(capsys, server, tmp_pki_files.root_ca, policy)
    assert code == 0
    assert out.startswith("UNPINNED") and "unpinned" in out


def test_denied_exits_1(capsys, tmp_path, tmp_pki_files, server):
    policy = _policy(
        tmp_path,
        'unpinned_hosts = "deny"\n' + _rule("other.example", [_random_pin(), _random_pin()]),
    )
    code, out, _ = _check(capsys, server, tmp_pki_files.root_ca, policy)
    assert code == 1 and out.startswith("DENIED")


def test_expired_rule_exits_0(capsys, tmp_path, tmp_pki_files, server):
    policy = _policy(
        tmp_path, _rule("localhost", [_random_pin(), _random_pin()], expires="2000-01-01")
    )
    code, out, _ = _check(capsys, server, tmp_pki_files.root_ca, policy)
    assert code == 0 and out.startswith("EXPIRED")


def test_rogue_ca_exits_3(capsys, tmp_path, pki, tmp_pki_files, rogue_server):
    policy = _policy(tmp_path, _rule("localhost", [spki_pin(pki.root), _random_pin()]))
    code, out, err = _check(capsys, rogue_server, tmp_pki_files.root_ca, policy)
    assert code == 3 and out == ""
    # OpenSSL's "unable to get local issuer certificate", in words that say what to do.
    cafile = tmp_pki_files.root_ca
    assert f"the chain does not verify against the CA certificates in {cafile}" in err
    assert "issuer certificate" not in err


def test_wrong_servername_exits_3(capsys, tmp_path, pki, tmp_pki_files, server):
    policy = _policy(tmp_path, _rule("localhost", [spki_pin(pki.root), _random_pin()]))
    code, _, err = _check(
        capsys, server, tmp_pki_files.root_ca, policy, "--servername", "not-on-cert.example"
    )
    assert code == 3
    assert "the certificate is not valid for 'not-on-cert.example'" in err
    assert "Hostname mismatch" not in err


@pytest.fixture
def expired_server(pki: PKI, tmp_path: Path) -> Iterator[TLSServer]:
    now = dt.datetime.now(dt.UTC)
    leaf = pki.intermediate.issue_leaf(
        "localhost",
        "127.0.0.1",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    certfile, keyfile = leaf.write(tmp_path / "expired")
    with TLSServer(certfile, keyfile) as srv:
        yield srv


def test_expired_leaf_exits_3(capsys, tmp_path, pki, tmp_pki_files, expired_server):
    policy = _policy(tmp_path, _rule("localhost", [spki_pin(pki.root), _random_pin()]))
    code, _, err = _check(capsys, expired_server, tmp_pki_files.root_ca, policy)
    assert code == 3 and "a certificate of the chain has expired" in err


def test_untrusted_self_signed_root_exits_3(capsys, tmp_path, pki, server):
    other_root = tmp_path / "other-root.pem"
    other_root.write_bytes(new_root("Unrelated Root").pem())
    policy = _policy(tmp_path, _rule("localhost", [spki_pin(pki.root), _random_pin()]))
    code, _, err = _check(capsys, server, other_root, policy)
    assert code == 3 and f"does not verify against the CA certificates in {other_root}" in err


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("this is = = not toml", "invalid TOML"),
        ('[domains."localhost"]\npins = ["sha256/nope"]\n', 'domains."localhost".pins[0]'),
        ('[domains."localhost"]\npinz = []\n', "did you mean"),
    ],
)
def test_bad_policy_exits_2_naming_the_file(capsys, tmp_path, tmp_pki_files, server, body, needle):
    policy = _policy(tmp_path, body, name="broken-policy.toml")
    code, out, err = _check(capsys, server, tmp_pki_files.root_ca, policy)
    assert code == 2 and out == ""
    assert "broken-policy.toml" in err and needle in err
    assert "Traceback" not in err
    assert server.handshakes == 0  # the policy is validated before connecting


def test_missing_policy_exits_2(capsys, tmp_path, tmp_pki_files, server):
    code, _, err = _check(capsys, server, tmp_pki_files.root_ca, tmp_path / "nope.toml")
    assert code == 2 and "nope.toml" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_exits_3(capsys, tmp_path, tmp_pki_files):
    policy = _policy(tmp_path, _rule("localhost", [_random_pin(), _random_pin()]))
    port = _free_port()
    code = main(
        [
            "check",
            f"127.0.0.1:{port}",
            "--policy",
            str(policy),
            "--cafile",
            str(tmp_pki_files.root_ca),
        ]
    )
    _, err = capsys.readouterr()
    assert code == 3 and f"127.0.0.1:{port}" in err and "cannot connect" in err


def test_timeout_exits_3(capsys, tmp_path, tmp_pki_files):
    # A listening socket that never accepts: TCP connects (backlog), the handshake times out.
    policy = _policy(tmp_path, _rule("localhost", [_random_pin(), _random_pin()]))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = main(
            [
                "check",
                f"127.0.0.1:{port}",
                "--policy",
                str(policy),
                "--cafile",
                str(tmp_pki_files.root_ca),
                "--timeout",
                "0.3",
            ]
        )
    _, err = capsys.readouterr()
    assert code == 3 and "timed out" in err


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback")
def test_ipv6_bracket_target(capsys, tmp_path, pki: PKI):
    leaf = pki.intermediate.issue_leaf("::1")
    certfile, keyfile = leaf.write(tmp_path / "v6")
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.pem())
    policy = _policy(tmp_path, _rule("::1", [spki_pin(leaf), _random_pin()]))
    with TLSServer(certfile, keyfile, host="::1") as srv:
        code = main(["check", f"[::1]:{srv.port}", "--policy", str(policy), "--cafile", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"[::1]:{srv.port}" in out
