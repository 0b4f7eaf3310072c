"""KnownPins (trust on first use) against real loopback TLS servers and real processes."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _support.pki import PKI, PKIFiles, make_pki, spki_pin, write_pki_files
from _support.servers import TLSServer
from certpin import ConfigurationError, KnownPins, PinValidationError, Policy, VerdictStatus
from certpin._cli import main


@pytest.fixture(scope="module")
def pki_a() -> PKI:
    return make_pki(("127.0.0.1", "localhost"))


@pytest.fixture
def files(pki_a: PKI, tmp_path: Path) -> PKIFiles:
    return write_pki_files(pki_a, tmp_path / "pki")


def get(ctx: Any, port: int, host: str = "127.0.0.1") -> int:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_first_use_records_then_must_match(files: PKIFiles, pki_a: PKI, tmp_path: Path) -> None:
    store = KnownPins(tmp_path / "known.json")
    ctx = store.create_default_context(cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        assert get(ctx, srv.port) == 200  # first use: recorded
        entry = store.get("127.0.0.1", srv.port)
        assert entry is not None and [str(p) for p in entry.pins] == [spki_pin(pki_a.leaf.cert)]
        assert get(ctx, srv.port) == 200  # same key: OK
        new_leaf = pki_a.intermediate.issue_leaf("127.0.0.1")  # same CA, new key
        srv.set_certificate(*new_leaf.write(tmp_path / "new"))
        with pytest.raises(PinValidationError) as err:
            get(ctx, srv.port)
        v = err.value.verdict
        assert v is not None and v.status is VerdictStatus.TOFU_MISMATCH
        assert spki_pin(pki_a.leaf.cert) in v.reason and spki_pin(new_leaf.cert) in v.reason
        assert "certpin tofu accept" in str(err.value)
    doc = json.loads((tmp_path / "known.json").read_text())
    assert doc["format"] == "certpin-known-pins/1" and f"127.0.0.1:{srv.port}" in doc["hosts"]


def test_ca_validation_still_required(files: PKIFiles, tmp_path: Path) -> None:
    import ssl

    store = KnownPins(tmp_path / "known.json")
    other_root = write_pki_files(make_pki(root_name="Other"), tmp_path / "other").root_ca
    with TLSServer(files.certfile, files.keyfile) as srv:
        with pytest.raises(ssl.SSLCertVerificationError):
            get(store.create_default_context(cafile=other_root), srv.port)
    assert store.entries() == []  # nothing recorded from an unverified connection


def test_match_issuer_opt_in_accepts_new_leaf_from_same_ca(
    files: PKIFiles, pki_a: PKI, tmp_path: Path
) -> None:
    store = KnownPins(tmp_path / "known.json", match_issuer=True)
    ctx = store.create_default_context(cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        get(ctx, srv.port)
        srv.set_certificate(*pki_a.intermediate.issue_leaf("127.0.0.1").write(tmp_path / "n"))
        assert get(ctx, srv.port) == 200
        rogue_leaf = pki_a.root.issue_intermediate("Other CA").issue_leaf("127.0.0.1")
        srv.set_certificate(*rogue_leaf.write(tmp_path / "r"))
        with pytest.raises(PinValidationError):
            get(ctx, srv.port)


def test_fallback_policy_still_enforced(files: PKIFiles, tmp_path: Path) -> None:
    from _dyn import BACKUP

    strict = Policy.from_dict(
        {"domains": {"127.0.0.1": {"pins": [BACKUP], "allow_single_pin": True}}}
    )
    ctx = KnownPins(tmp_path / "k.json").create_default_context(strict, cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        with pytest.raises(PinValidationError) as err:
            get(ctx, srv.port)
    assert err.value.verdict is not None and err.value.verdict.status is VerdictStatus.FAILED


def test_corrupt_store_fails_closed(files: PKIFiles, tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    path.write_text("{broken")
    ctx = KnownPins(path).create_default_context(cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        with pytest.raises(ConfigurationError, match="unreadable known-pins"):
            get(ctx, srv.port)


_RECORDER = """
import sys
from certpin import KnownPins
from certpin._pins import Pin
from _support.pki import make_pki
store = KnownPins(sys.argv[1])
leaf = make_pki(("h.example",)).leaf
for i in range(int(sys.argv[3])):
    store.record(f"h{sys.argv[2]}-{i}.example", 443, tuple(leaf.chain_der()))
"""


def test_concurrent_processes_lose_no_record(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    tests_dir = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": tests_dir}
    import os

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RECORDER, str(path), str(n), "10"], env={**os.environ, **env}
        )
        for n in range(6)
    ]
    assert [p.wait(60) for p in procs] == [0] * 6
    assert len(KnownPins(path).entries()) == 60


def test_cli_list_accept_forget(
    files: PKIFiles, pki_a: PKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "known.json"
    store = KnownPins(path)
    with TLSServer(files.certfile, files.keyfile) as srv:
        get(store.create_default_context(cafile=files.root_ca), srv.port)
        target = f"127.0.0.1:{srv.port}"
        assert main(["tofu", "list", "--file", str(path)]) == 0
        assert spki_pin(pki_a.leaf.cert) in capsys.readouterr().out
        new_leaf = pki_a.intermediate.issue_leaf("127.0.0.1")
        srv.set_certificate(*new_leaf.write(tmp_path / "new"))
        assert (
            main(["tofu", "accept", target, "--file", str(path), "--cafile", str(files.root_ca)])
            == 0
        )
        assert spki_pin(new_leaf.cert) in capsys.readouterr().out
        assert get(store.create_default_context(cafile=files.root_ca), srv.port) == 200
        assert main(["tofu", "list", "--file", str(path), "--json"]) == 0
        assert target in json.loads(capsys.readouterr().out)
        assert main(["tofu", "forget", target, "--file", str(path)]) == 0
        assert main(["tofu", "forget", target, "--file", str(path)]) == 1
        assert store.entries() == []
        assert (
            main(
                [
                    "tofu",
                    "accept",
                    "127.0.0.1:1",
                    "--file",
                    str(path),
                    "--cafile",
                    str(files.root_ca),
                ]
            )
            == 3
        )
