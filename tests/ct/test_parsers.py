"""Every parser of log data is bounded and raises only certpin's errors: log lists, tree heads,
checkpoints, entries, tiles and certificates, valid and hostile."""

from __future__ import annotations

import base64
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from demo_ctlog import TestLog
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.pki import make_key
from certpin.lifecycle.ct.certs import dns_names, issuance_tbs, tbs_of_certificate
from certpin.lifecycle.ct.checkpoint import parse_checkpoint
from certpin.lifecycle.ct.entries import parse_data_tile, parse_get_entries, parse_leaf
from certpin.lifecycle.ct.errors import EntryError, LogError, LogListError
from certpin.lifecycle.ct.loglist import MAX_LOG_LIST_SIZE, load_log_list, parse_log_list
from certpin.lifecycle.ct.sth import LogKey, parse_sth, verify_tree_head
from ct._certs import issuance
from ct.conftest import run_ct

# -- log lists ------------------------------------------------------------------------------------


def _entry(log: TestLog, **change) -> dict:
    entry = log.log_list_entry("https://log.example/ct/")
    entry.update(change)
    return entry


def _list(*logs: dict, tiled: tuple[dict, ...] = ()) -> str:
    return json.dumps(
        {"operators": [{"name": "op", "logs": list(logs), "tiled_logs": list(tiled)}]}
    )


def test_a_v3_log_list_with_both_kinds():
    rfc, tiled = TestLog(), TestLog(static=True)
    logs = parse_log_list(
        _list(
            _entry(rfc),
            tiled=(tiled.log_list_entry("https://tiles.example/x", "https://sub.example/log/"),),
        ),
        "list.json",
    )
    assert [(x.kind, x.url, x.origin) for x in logs] == [
        ("rfc6962", "https://log.example/ct/", ""),
        ("tiled", "https://tiles.example/x/", "sub.example/log"),
    ]
    assert logs[0].key.log_id == rfc.log_id and logs[0].state == "usable" and logs[0].watched


BAD_LISTS = [
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"operators": {}}', "operators: expected a list"),
    (_list({"key": "AAAA"}), "operators[0].logs[0].key: not a DER"),
    (
        _list(_entry(TestLog(), log_id=base64.b64encode(b"x" * 32).decode())),
        "log_id: not the SHA-256",
    ),
    (_list(_entry(TestLog(), url="ftp://log.example/")), "url:"),
    (_list(_entry(TestLog(), url="https://log.example/?q=1")), "url:"),
    (_list(_entry(TestLog(), state={"dancing": {}})), "state: expected one of"),
    (_list(_entry(TestLog(key_type="p384"))), "P-256"),
    (_list(_entry(TestLog(), key="not base64!")), "key: not base64"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_LISTS)
def test_a_malformed_log_list_is_an_input_error_naming_the_file(
    capsys, policy, tmp_path, text, problem
):
    path = tmp_path / "broken-list.json"
    path.write_text(text)
    with pytest.raises(LogListError, match="broken-list.json"):
        load_log_list(str(path))
    code, records, err = run_ct(
        capsys, "watch", "--policy", str(policy), "--log-list", str(path), "--once"
    )
    assert code == 2 and records == []
    assert str(path) in err and problem in err


def test_twin_a_well_formed_log_list_is_read(capsys, policy, tmp_path, rfc_log):
    path = tmp_path / "list.json"
    path.write_text(_list(rfc_log.log.log_list_entry(rfc_log.url)))
    code, _, err = run_ct(
        capsys, "watch", "--policy", str(policy), "--log-list", str(path), "--once"
    )
    assert code == 0, err


def test_a_duplicate_log_and_a_huge_list_are_refused(tmp_path):
    log = TestLog()
    with pytest.raises(LogListError, match="the same log_id"):
        parse_log_list(_list(_entry(log), _entry(log)), "l.json")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_LOG_LIST_SIZE + 1))
    with pytest.raises(LogListError, match="larger than"):
        load_log_list(str(big))
    with pytest.raises(LogListError, match="cannot read"):
        load_log_list(str(tmp_path / "missing.json"))


def test_a_log_list_over_plain_http_must_come_from_loopback(capsys, policy):
    url = "http://loglist.example/log_list.json"
    code, _, err = run_ct(capsys, "watch", "--policy", str(policy), "--log-list", url, "--once")
    assert code == 2 and url in err and "https" in err


def test_only_retired_logs_is_a_usage_error(capsys, policy, tmp_path):
    path = tmp_path / "l.json"
    path.write_text(
        _list(_entry(TestLog(), state={"retired": {"timestamp": "2020-01-01T00:00:00Z"}}))
    )
    code, _, err = run_ct(
        capsys, "watch", "--policy", str(policy), "--log-list", str(path), "--once"
    )
    assert code == 2 and "no log to watch" in err


@pytest.mark.parametrize("status", [200, 404])
def test_the_log_list_can_be_a_url(capsys, policy, tmp_path, rfc_log, status):
    body = _list(rfc_log.log.log_list_entry(rfc_log.url)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/log_list.json"
        code, _, err = run_ct(capsys, "watch", "--policy", str(policy), "--log-list", url, "--once")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert code == (0 if status == 200 else 2), err
    if status == 404:
        assert url in err and "HTTP 404" in err


# -- tree heads and checkpoints -------------------------------------------------------------------


def _key(log: TestLog) -> LogKey:
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    return LogKey(log.spki, log.log_id, load_der_public_key(log.spki))  # type: ignore[arg-type]


def test_an_sth_verifies_and_a_changed_one_does_not():
    log = TestLog()
    body = json.dumps(log.sth()).encode()
    head, signature = parse_sth(body, "u")
    verify_tree_head(_key(log), head, signature, "u")
    data = json.loads(body)
    data["tree_size"] = 1
    head, signature = parse_sth(json.dumps(data).encode(), "u")
    with pytest.raises(LogError, match="does not verify"):
        verify_tree_head(_key(log), head, signature, "u")
    rsa = TestLog(key_type="rsa2048")
    head, signature = parse_sth(json.dumps(rsa.sth()).encode(), "u")
    with pytest.raises(LogError, match="does not match"):
        verify_tree_head(_key(log), head, signature, "u")  # an RSA signature for an EC key


@pytest.mark.parametrize(
    "change",
    [
        {"tree_size": True},
        {"tree_size": -1},
        {"tree_size": 2**64},
        {"sha256_root_hash": "AA=="},
        {"timestamp": "now"},
        {"tree_head_signature": "%%%"},
    ],
)
def test_a_malformed_sth_is_a_log_error(change):
    data = TestLog().sth()
    data.update(change)
    with pytest.raises(LogError):
        parse_sth(json.dumps(data).encode(), "u")


def _note(log: TestLog, mutate) -> bytes:
    text = log.checkpoint().decode()
    return mutate(text).encode() if isinstance(mutate(text), str) else mutate(text)


BAD_NOTES = [
    (lambda t: t.replace("ct.example/test-log\n", "other.example/log\n", 1), "origin"),
    (lambda t: t.replace("\n0\n", "\n00\n", 1), "tree size"),
    (lambda t: t.replace("\n\n", "\n", 1), "blank line"),
    (lambda t: t.replace("\u2014", "-"), "malformed signature line"),
    (lambda t: t.replace("\n\n", "\nextension\n\n", 1), "extension lines"),
    (lambda t: t.encode().replace(b"\n", b"\r\n", 1), "control character"),
    (lambda t: t.encode("utf-16"), "not UTF-8"),
]


@pytest.mark.parametrize(("mutate", "problem"), BAD_NOTES)
def test_a_malformed_checkpoint_is_a_log_error(mutate, problem):
    log = TestLog(static=True)
    with pytest.raises(LogError, match=problem):
        parse_checkpoint(_note(log, mutate), log.origin, _key(log), "u")


def test_a_checkpoint_without_the_logs_signature_is_refused():
    log, other = TestLog(static=True), TestLog(static=True)
    parse_checkpoint(log.checkpoint(), log.origin, _key(log), "u")
    with pytest.raises(LogError, match="no signature by the log's key"):
        parse_checkpoint(other.checkpoint(), log.origin, _key(log), "u")
    log.signing_key = make_key("p256")
    with pytest.raises(LogError, match="does not verify"):
        parse_checkpoint(log.checkpoint(), log.origin, _key(log), "u")


# -- entries, tiles and certificates: hostile bytes -----------------------------------------------


@pytest.fixture(scope="module")
def sample():
    from _support.pki import new_root

    ca = new_root("R").issue_intermediate("I")
    log = TestLog(static=True)
    i = issuance(ca, "a.example", "b.example")
    log.add_x509(i.final(), i.chain())
    first = log.add_precert(i.precert(), i.chain())
    log.add_x509(i.final([log.sct(first)]), i.chain())
    return log, i


def test_names_and_the_shared_tbs_of_a_precertificate_and_its_final_certificate(sample):
    log, i = sample
    precert_entry = parse_leaf(1, log.entries[1].leaf(), log.entries[1].extra_data())
    final_entry = parse_leaf(2, log.entries[2].leaf(), log.entries[2].extra_data())
    assert dns_names(precert_entry.tbs_or_cert) == ["a.example", "b.example"]
    final_tbs = tbs_of_certificate(final_entry.tbs_or_cert)
    assert issuance_tbs(final_tbs) != final_tbs  # the SCT list came out
    assert issuance_tbs(final_tbs) == issuance_tbs(precert_entry.tbs_or_cert)
    plain = tbs_of_certificate(log.entries[0].cert)
    assert issuance_tbs(plain) is plain
    leaf, chain = precert_entry.chain()
    assert leaf == log.entries[1].cert and chain == i.chain()


def _mutations(data: bytes, seed: int, count: int = 200):
    rng = random.Random(seed)
    for _ in range(count):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(b)) if b else 0
            if op < 0.5 and b:
                b[pos] = rng.randrange(256)
            elif op < 0.75:
                del b[pos : pos + rng.randint(1, 40)]
            else:
                b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        yield bytes(b)


def _only_certpin_errors(func, data):
    try:
        func(data)
    except (EntryError, LogError):
        pass


def test_mutated_entries_tiles_and_certificates_raise_only_entry_errors(sample):
    log, _ = sample
    leaf = log.entries[1].leaf()
    tile = log.data_tile(0, 3)
    cert = log.entries[2].cert
    get_entries = log.entries_json(0, 3)
    for data in _mutations(leaf, 1):
        _only_certpin_errors(lambda d: parse_leaf(0, d, log.entries[1].extra_data()).chain(), data)
    for data in _mutations(tile, 2):
        _only_certpin_errors(lambda d: parse_data_tile(d, 0, 3, "u"), data)
    for data in _mutations(cert, 3):
        _only_certpin_errors(lambda d: issuance_tbs(tbs_of_certificate(d)), data)
        _only_certpin_errors(lambda d: dns_names(tbs_of_certificate(d)), data)
    for data in _mutations(get_entries, 4):
        _only_certpin_errors(lambda d: parse_get_entries(d, 0, 3, "u"), data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_entry_errors(data):
    _only_certpin_errors(lambda d: parse_leaf(0, d, d).chain(), data)
    _only_certpin_errors(lambda d: parse_data_tile(d, 0, 2, "u"), data)
    _only_certpin_errors(lambda d: dns_names(d), data)
    _only_certpin_errors(lambda d: issuance_tbs(d), data)
    _only_certpin_errors(lambda d: parse_checkpoint(d, "o", _key(_LOG), "u"), data)


_LOG = TestLog()


def test_a_get_entries_answer_longer_than_asked_is_refused(sample):
    log, _ = sample
    with pytest.raises(EntryError, match="3 entries, 2 asked for"):
        parse_get_entries(log.entries_json(0, 3), 0, 2, "u")
    with pytest.raises(EntryError, match="no entries"):
        parse_get_entries(b'{"entries": []}', 0, 2, "u")


def test_a_tile_leaf_index_must_name_its_own_entry(sample):
    log, _ = sample
    tile = log.data_tile(0, 3)
    with pytest.raises(EntryError, match="leaf_index"):
        parse_data_tile(tile, 256, 3, "u")  # read as if it were the second tile
    with pytest.raises(EntryError, match="trailing"):
        parse_data_tile(tile, 0, 2, "u")
