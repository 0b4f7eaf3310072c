"""Embedded SCTs (issue #15): ``certpin check`` and ``certpin monitor`` count the SCTs of the
leaf, name their logs from ``--log-list`` and verify each signature (RFC 6962 §3.2, over the
precertificate's TBS and the issuer's key hash).

Every certificate here is issued as a CA issues it: the precertificate (critical poison) goes to a
real loopback RFC 6962 log over HTTP (``add-pre-chain``), the log's answer is encoded as an SCT,
and the final certificate carries the SCT list extension; a loopback TLS server serves it. Each
passing case has its failing twin: a flipped signature byte, an SCT for another precertificate,
another issuer, a log missing from the list, no list, no SCTs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server

from _support.pki import CA, new_root
from certpin.cli.main import main
from certpin.core.der import spki_from_tbs_certificate
from certpin.core.times import iso
from certpin.lifecycle.ct.loglist import load_log_list
from certpin.lifecycle.sct import embedded_scts
from ct._certs import Issuance, issuance
from lifecycle._sct import (
    Served,
    add_pre_chain,
    compressed_point_ca,
    flip_signature,
    new_log,
    sct_from_answer,
    serve,
    signed_sct,
    write_log_list,
)

HOST = "localhost"


@pytest.fixture(scope="module")
def ca() -> CA:
    return new_root("SCT Test Root").issue_intermediate("SCT Test Intermediate")


@pytest.fixture
def log_a() -> Iterator[RFC6962Server]:
    with new_log() as server:
        yield server


@pytest.fixture
def log_b() -> Iterator[RFC6962Server]:
    with new_log() as server:
        yield server


def _argv(verb: str, served: Served, *extra: str) -> list[str]:
    """``certpin check 127.0.0.1:PORT --servername localhost`` or ``certpin monitor
    localhost:PORT``, with the served policy and CA file, then `extra`."""
    target = [f"127.0.0.1:{served.port}", "--servername", HOST]
    if verb == "monitor":
        target = [f"{HOST}:{served.port}"]
    return [verb, *target, "--policy", str(served.policy), "--cafile", str(served.cafile), *extra]


def _check(
    capsys: pytest.CaptureFixture[str], served: Served, *extra: str
) -> tuple[int, dict[str, Any]]:
    """``certpin check … --no-revocation --json …``: exit code and JSON."""
    code = main(_argv("check", served, "--no-revocation", "--json", *extra))
    out = capsys.readouterr().out
    return code, json.loads(out)


def _monitor(
    capsys: pytest.CaptureFixture[str], served: Served, *extra: str
) -> tuple[int, dict[str, Any]]:
    """``certpin monitor … --no-revocation --json …``: exit code and the endpoint's JSON."""
    code = main(_argv("monitor", served, "--no-revocation", "--json", *extra))
    (endpoint,) = json.loads(capsys.readouterr().out)["endpoints"]
    return code, endpoint


def _timestamp(answer: dict[str, Any]) -> str | None:
    return iso(dt.datetime.fromtimestamp(answer["timestamp"] / 1000, dt.UTC))


def _logged(ca: CA, *logs: RFC6962Server) -> tuple[Issuance, list[dict[str, Any]]]:
    """An issuance for localhost whose precertificate went to each of `logs`."""
    i = issuance(ca, HOST)
    return i, [add_pre_chain(log, i) for log in logs]


# -- check: one SCT -----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["p256", "rsa2048"])
def test_check_verifies_an_embedded_sct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CA, key_type: str
) -> None:
    with new_log(key_type) as log:
        i, (answer,) = _logged(ca, log)
        log_list = write_log_list(tmp_path / "log_list.json", log)
        with serve(tmp_path, i, i.final([sct_from_answer(answer)])) as served:
            code, doc = _check(capsys, served, "--log-list", str(log_list))
    assert code == 0 and doc["status"] == "ok"
    scts = doc["scts"]
    assert scts["count"] == 1 and scts["verified"] == 1 and scts["error"] is None
    assert (scts["failed"], scts["unknown"]) == (0, 0)
    (sct,) = scts["scts"]
    assert sct["verified"] is True
    assert sct["log_id"] == answer["id"]
    assert sct["log"] == "certpin test log ct.example/test-log"
    assert sct["log_url"] == log.url
    assert sct["operator"] == "operator 0"
    assert sct["timestamp"] == _timestamp(answer)
    assert sct["reason"] == "certpin test log ct.example/test-log: signature verified"


def test_check_flipped_signature_is_not_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CA, log_a: RFC6962Server
) -> None:
    """Twin: the same SCT with one signature byte flipped fails; the pin verdict (exit 0) does
    not change, as docs/cli.md has it (SCTs are reported, not enforced)."""
    i, (answer,) = _logged(ca, log_a)
    log_list = write_log_list(tmp_path / "log_list.json", log_a)
    with serve(tmp_path, i, i.final([flip_signature(sct_from_answer(answer))])) as served:
        code, doc = _check(capsys, served, "--log-list", str(log_list))
    assert code == 0 and doc["status"] == "ok"
    scts = doc["scts"]
    assert scts["count"] == 1 and scts["verified"] == 0
    assert (scts["failed"], scts["unknown"]) == (1, 0)
    (sct,) = scts["scts"]
    assert sct["verified"] is False
    assert sct["log"] == "certpin test log ct.example/test-log"
    assert "does not verify with the log's key" in sct["reason"]


def test_check_text_output_names_the_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CA, log_a: RFC6962Server
) -> None:
    i, (answer,) = _logged(ca, log_a)
    log_list = write_log_list(tmp_path / "log_list.json", log_a)
    good, bad = sct_from_answer(answer), flip_signature(sct_from_answer(answer))
    for sct, summary in ((good, "1 embedded SCT(s), 1 verified"), (bad, "0 verified, 1 FAILED")):
        with serve(tmp_path, i, i.final([sct])) as served:
            code = main(_argv("check", served, "--no-revocation", "--log-list", str(log_list)))
        out = capsys.readouterr().out
        assert code == 0
        (line,) = [x for x in out.splitlines() if x.strip().startswith("SCTs:")]
        assert line.endswith(summary)
        verified = "certpin test log ct.example/test-log: signature verified"
        assert (verified in out) is (sct is good)


def test_check_sct_of_another_precertificate_is_not_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CA, log_a: RFC6962Server
) -> None:
    """Twin: a genuine, unmodified SCT of the log, but for another precertificate (same host,
    same key, another serial): the signature binds the TBS, so it does not verify here."""
    i = issuance(ca, HOST)
    other = issuance(ca, HOST, key=i.key)
    answer = add_pre_chain(log_a, other)
    log_list = write_log_list(tmp_path / "log_list.json", log_a)
    with serve(tmp_path, i, i.final([sct_from_answer(answer)])) as served:
        code, doc = _check(capsys, served, "--log-list", str(log_list))
    assert code == 0
    (sct,) = doc["scts"]["scts"]
    assert sct["verified"] is False and doc["scts"]["verified"] == 0


def test_check_sct_from_a_log_not_in_the_list(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ca: CA,
    log_a: RFC6962Server,
    log_b: RFC6962Server,
) -> None:
    """Twin: the list names another log: the SCT is unknown (neither verified nor failed)."""
    i, (answer,) = _logged(ca, log_a)
    log_list = write_log_list(tmp_path / "log_list.json", log_b)
    with serve(tmp_path, i, i.final([sct_from_answer(answer)])) as served:
        code, doc = _check(capsys, served, "--log-list", str(log_list))
    assert code == 0
    scts = doc["scts"]
    assert scts["count"] == 1 and scts["verified"] == 0
    assert (scts["failed"], scts["unknown"]) == (0, 1)
    (sct,) = scts["scts"]
    assert sct["verified"] is None
    assert sct["log"] is None and sct["log_url"] is None and sct["operator"] is None
    assert sct["log_id"] == answer["id"]
    assert sct["reason"] == f"log {answer['id']}: not in the log list"


@pytest.mark.parametrize("run", [_check, _monitor], ids=["check", "monitor"])
def test_without_a_log_list_counts_only(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ca: CA,
    log_a: RFC6962Server,
    run: Callable[..., tuple[int, dict[str, Any]]],
) -> None:
    """``check`` and ``monitor`` alike: the SCT is counted, its log unknown, nothing verified."""
    i, (answer,) = _logged(ca, log_a)
    with serve(tmp_path, i, i.final([sct_from_answer(answer)])) as served:
        code, doc = run(capsys, served)
    assert code == 0
    scts = doc["scts"]
    assert scts["count"] == 1 and scts["verified"] is None
    assert scts["failed"] is None and scts["unknown"] is None
    (sct,) = scts["scts"]
    assert sct["verified"] is None and sct["log"] is None
    assert sct["log_id"] == answer["id"]
    assert sct["reason"] == f"log {answer['id']}: not verified (no log list)"


def test_check_leaf_without_scts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CA, log_a: RFC6962Server
) -> None:
    """Twin: the same issuance without the SCT list extension: count 0."""
    i, _ = _logged(ca, log_a)
    log_list = write_log_list(tmp_path / "log_list.json", log_a)
    with serve(tmp_path, i, i.final()) as served:
        code, doc = _check(capsys, served, "--log-list", str(log_list))
    assert code == 0
    assert doc["scts"] == {
        "count": 0,
        "verified": 0,
        "failed": 0,
        "unknown": 0,
        "error": None,
        "scts": [],
    }


def test_check_bad_log_list_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CA, log_a: RFC6962Server
) -> None:
    """A log list whose log_id is not its key's hash is refused before any connection."""
    i, (answer,) = _logged(ca, log_a)
    log_list = write_log_list(tmp_path / "log_list.json", log_a)
    doc = json.loads(log_list.read_text())
    doc["operators"][0]["logs"][0]["log_id"] = answer["id"][::-1]
    log_list.write_text(json.dumps(doc))
    with serve(tmp_path, i, i.final([sct_from_answer(answer)])) as served:
        code = main(_argv("check", served, "--log-list", str(log_list)))
    captured = capsys.readouterr()
    assert code == 2
    assert "log_list.json" in captured.err and "log_id" in captured.err


# -- check: two SCTs ----------------------------------------------------------------------------


@pytest.mark.parametrize("flipped", [None, 0, 1])
def test_check_two_scts_from_two_logs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ca: CA,
    log_a: RFC6962Server,
    log_b: RFC6962Server,
    flipped: int | None,
) -> None:
    """Both SCTs verify with their own log's key; twins: either one's signature flipped."""
    i, answers = _logged(ca, log_a, log_b)
    scts = [sct_from_answer(a) for a in answers]
    if flipped is not None:
        scts[flipped] = flip_signature(scts[flipped])
    log_list = write_log_list(tmp_path / "log_list.json", log_a, log_b)
    with serve(tmp_path, i, i.final(scts)) as served:
        code, doc = _check(capsys, served, "--log-list", str(log_list))
    assert code == 0
    report = doc["scts"]
    assert report["count"] == 2
    assert report["verified"] == (2 if flipped is None else 1)
    got = report["scts"]
    assert [s["log_id"] for s in got] == [a["id"] for a in answers]
    assert [s["log_url"] for s in got] == [log_a.url, log_b.url]
    assert [s["operator"] for s in got] == ["operator 0", "operator 1"]
    assert [s["verified"] for s in got] == [n != flipped for n in range(2)]


# -- monitor ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tampered", [False, True])
def test_monitor_reports_embedded_scts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ca: CA,
    log_a: RFC6962Server,
    log_b: RFC6962Server,
    tampered: bool,
) -> None:
    """One SCT of a listed log (verified, or its flipped-signature twin) and one of a log the
    list does not name."""
    i, (listed, unlisted) = _logged(ca, log_a, log_b)
    first = sct_from_answer(listed)
    scts = [flip_signature(first) if tampered else first, sct_from_answer(unlisted)]
    log_list = write_log_list(tmp_path / "log_list.json", log_a)
    with serve(tmp_path, i, i.final(scts)) as served:
        code, endpoint = _monitor(capsys, served, "--log-list", str(log_list))
    assert code == 0 and endpoint["status"] == "ok"
    report = endpoint["scts"]
    assert report["count"] == 2
    assert report["verified"] == (0 if tampered else 1)
    a, b = report["scts"]
    assert a["log"] == "certpin test log ct.example/test-log" and a["log_url"] == log_a.url
    assert a["verified"] is (not tampered)
    assert b["log"] is None and b["verified"] is None and b["log_id"] == unlisted["id"]


def test_monitor_text_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CA, log_a: RFC6962Server
) -> None:
    i, (answer,) = _logged(ca, log_a)
    log_list = write_log_list(tmp_path / "log_list.json", log_a)
    with serve(tmp_path, i, i.final([flip_signature(sct_from_answer(answer))])) as served:
        code = main(_argv("monitor", served, "--no-revocation", "--log-list", str(log_list)))
    out = capsys.readouterr().out
    assert code == 0
    assert "  SCTs: 1 embedded SCT(s), 0 verified, 1 FAILED" in out.splitlines()


# -- the library: what the signature binds ------------------------------------------------------


def _der(cert: CA) -> bytes:
    return cert.cert.public_bytes(serialization.Encoding.DER)


def test_sct_binds_the_issuer_key(tmp_path: Path, ca: CA, log_a: RFC6962Server) -> None:
    """issuer_key_hash: the right issuer verifies; another CA's certificate, or none, fails."""
    i, (answer,) = _logged(ca, log_a)
    leaf = i.final([sct_from_answer(answer)])
    logs = load_log_list(str(write_log_list(tmp_path / "log_list.json", log_a)))
    assert embedded_scts(leaf, _der(ca), logs).scts[0].verified is True
    other = new_root("Other Root").issue_intermediate("SCT Test Intermediate")
    assert embedded_scts(leaf, _der(other), logs).scts[0].verified is False
    assert embedded_scts(leaf, None, logs).scts[0].verified is False


@pytest.mark.parametrize("hashed", ["as-in-certificate", "re-encoded"])
def test_issuer_key_hash_is_over_the_certificates_spki(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hashed: str
) -> None:
    """RFC 6962 §3.2: issuer_key_hash is over the issuer's SubjectPublicKeyInfo as its
    certificate holds it (certificate-transparency-go hashes RawSubjectPublicKeyInfo). An
    intermediate with a compressed EC point re-encodes to other bytes; only the SCT signed over
    the certificate's own SPKI verifies. Signed with the log's key here: the demo log's
    add-pre-chain hashes the re-encoded key."""
    ca = compressed_point_ca(new_root("SCT Test Root"), "Compressed Intermediate")
    raw = spki_from_tbs_certificate(ca.cert.tbs_certificate_bytes)
    reencoded = ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert raw != reencoded
    log = TestLog()
    i = issuance(ca, HOST)
    timestamp = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    sct = signed_sct(log, i, raw if hashed == "as-in-certificate" else reencoded, timestamp)
    log_list = tmp_path / "log_list.json"
    entry = log.log_list_entry("http://127.0.0.1:9/")
    log_list.write_text(
        json.dumps({"operators": [{"name": "operator 0", "email": [], "logs": [entry]}]})
    )
    with serve(tmp_path, i, i.final([sct])) as served:
        code, doc = _check(capsys, served, "--log-list", str(log_list))
    assert code == 0 and doc["status"] == "ok"
    (got,) = doc["scts"]["scts"]
    assert got["verified"] is (hashed == "as-in-certificate")
