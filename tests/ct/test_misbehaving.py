"""Logs that lie: a wrong key, a forked tree, tampered entries and tiles. Each is a
``log_error`` (exit 3, winning over 1), its unverified entries are not printed, its state does
not move; the twin (the same log behaving) passes."""

from __future__ import annotations

import json

import pytest
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server, TiledServer

from _support.pki import make_key
from certpin.core.policy import Policy
from certpin.lifecycle.ct.loglist import load_log_list
from ct._certs import issuance
from ct.conftest import watch_once, write_log_list

KINDS = ["rfc6962", "tiled"]


def _server(kind: str, **log):
    if kind == "tiled":
        return TiledServer(TestLog(static=True, **log))
    return RFC6962Server(TestLog(**log))


def _add(server, world, n=1, rogue=False, name="api.example.com"):
    for _ in range(n):
        i = issuance(world.rogue if rogue else world.ca, name, key=None if rogue else world.primary)
        server.log.add_x509(i.final(), i.chain())


def _watch(capsys, policy, lst, *extra):
    return watch_once(capsys, str(policy), str(lst), *extra)


def _state(tmp_path):
    path = tmp_path / "state" / "ct-watch.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("wrong", [True, False])
def test_a_tree_head_signed_by_another_key(capsys, world, policy, tmp_path, kind, wrong):
    with _server(kind) as server:
        _add(server, world, rogue=True)
        if wrong:
            server.log.signing_key = make_key("p256")
        lst = write_log_list(tmp_path / "l.json", server)
        code, records, _ = _watch(capsys, policy, lst, "--state", str(tmp_path / "state"))
    if wrong:
        assert code == 3
        (record,) = records
        assert record["kind"] == "log_error" and record["log"] == server.url
        assert "signature" in record["reason"]
        saved = _state(tmp_path)
        assert saved is None or saved["logs"] == {}  # nothing of the log is remembered
    else:
        assert code == 1 and records[0]["kind"] == "unexpected"


@pytest.mark.parametrize("key_type", ["rsa2048", "p256"])
def test_rfc6962_logs_sign_with_ecdsa_or_rsa(capsys, world, policy, tmp_path, key_type):
    with RFC6962Server(TestLog(key_type=key_type)) as server:
        _add(server, world)
        code, records, err = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    assert code == 0, err
    assert records[0]["kind"] == "pinned"


@pytest.mark.parametrize("key_type", ["ed25519", "p256", "rsa2048"])
@pytest.mark.parametrize("witness", [True, False])
def test_checkpoints_signed_by_each_key_type_with_or_without_cosignatures(
    capsys, world, policy, tmp_path, key_type, witness
):
    with TiledServer(TestLog(static=True, key_type=key_type)) as server:
        server.witness = witness
        _add(server, world)
        code, records, err = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    assert code == 0, err
    assert records[0]["kind"] == "pinned"


@pytest.mark.parametrize("kind", KINDS)
def test_a_log_error_wins_over_an_unexpected_certificate_of_another_log(
    capsys, world, policy, tmp_path, kind
):
    with _server(kind) as bad, RFC6962Server(TestLog()) as good:
        _add(bad, world)
        bad.log.signing_key = make_key("p256")
        _add(good, world, rogue=True)
        code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", bad, good))
    assert code == 3
    assert sorted(r["kind"] for r in records) == ["log_error", "unexpected"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grow", [True, False])
def test_a_forked_tree(capsys, world, policy, tmp_path, kind, grow):
    state = str(tmp_path / "state")
    with _server(kind) as server:
        _add(server, world, n=3)
        lst = write_log_list(tmp_path / "l.json", server)
        assert _watch(capsys, policy, lst, "--state", state)[0] == 0
        before = _state(tmp_path)["logs"]
        server.log.fork(1)  # entries 1 and 2 rewritten: a different tree, validly signed
        if grow:
            _add(server, world, rogue=True)
        code, records, _ = _watch(capsys, policy, lst, "--state", state)
    assert code == 3
    (record,) = records  # the rogue entry of the forked tree is not trusted, so not printed
    assert record["kind"] == "log_error"
    assert "fork" in record["reason"]
    assert _state(tmp_path)["logs"] == before


@pytest.mark.parametrize("kind", KINDS)
def test_twin_a_log_that_grows_honestly(capsys, world, policy, tmp_path, kind):
    state = str(tmp_path / "state")
    with _server(kind) as server:
        _add(server, world, n=3)
        lst = write_log_list(tmp_path / "l.json", server)
        assert _watch(capsys, policy, lst, "--state", state)[0] == 0
        _add(server, world, rogue=True)
        code, records, _ = _watch(capsys, policy, lst, "--state", state)
    assert code == 1
    assert [(r["kind"], r["index"]) for r in records] == [("unexpected", 3)]


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("rfc6962", "entries"),
        ("rfc6962", "none"),
        ("tiled", "entries"),
        ("tiled", "data tile"),
        ("tiled", "none"),
    ],
)
def test_tampered_entries_or_tiles(capsys, world, policy, tmp_path, kind, where):
    with _server(kind) as server:
        _add(server, world, n=2)
        _add(server, world, rogue=True)
        if where == "entries":
            server.log.tamper(2)
        elif where == "data tile":
            server.log.tampered_tiles.add(0)
        code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    if where == "none":
        assert code == 1 and len(records) == 3
        return
    assert code == 3
    (record,) = records
    assert record["kind"] == "log_error"
    assert "do not hash into the signed tree" in record["reason"]


@pytest.mark.parametrize("tampered", [(0, 1), (1, 0), None])
def test_a_tampered_hash_tile_fails_the_consistency_check(
    capsys, world, policy, tmp_path, tampered
):
    state = str(tmp_path / "state")
    with TiledServer(TestLog(static=True)) as server:
        _add(server, world, n=300)  # one full tile and a partial one
        lst = write_log_list(tmp_path / "l.json", server)
        assert _watch(capsys, policy, lst, "--state", state)[0] == 0
        _add(server, world, n=5)
        if tampered:  # (level, index): a tile the proof from 300 to 305 is computed from
            server.log.tampered_hash_tiles.add(tampered)
        code, records, _ = _watch(capsys, policy, lst, "--state", state)
    if tampered:
        assert code == 3 and records[0]["kind"] == "log_error"
        assert "not consistent" in records[0]["reason"]
    else:
        assert code == 0 and len(records) == 5


def test_chunks_are_each_checked_against_the_signed_root(capsys, world, policy, tmp_path):
    # 700 entries, chunks of 256: the first chunks are checked with consistency proofs to the
    # signed size, the last one against the root itself. A tampered entry in the first chunk
    # stops the log there: nothing after it is printed either.
    from certpin.lifecycle.ct import watch

    with RFC6962Server(TestLog()) as server:
        _add(server, world, n=3, rogue=True)
        _add(server, world, n=697)
        server.log.tamper(200)
        lst = write_log_list(tmp_path / "l.json", server)
        out: list[dict] = []
        with watch.Watcher(
            load_log_list(str(lst)), Policy.from_file(policy), emit=out.append, chunk=256
        ) as watcher:
            summary = watcher.run_once()
    assert summary.exit_code == 3
    assert [r["kind"] for r in out] == ["log_error"]
    assert "entries 0 to 255" in out[0]["reason"]


def test_a_log_that_is_down_is_a_log_error(capsys, world, policy, tmp_path):
    with RFC6962Server(TestLog()) as server:
        lst = write_log_list(tmp_path / "l.json", server)
    code, records, _ = _watch(capsys, policy, lst)  # the server has stopped
    assert code == 3 and records[0]["kind"] == "log_error"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("swapped", [True, False])
def test_a_precertificate_swapped_beside_its_entry(capsys, world, policy, tmp_path, kind, swapped):
    # The tree holds the rogue precertificate's TBS; the log serves the owner's genuine
    # precertificate beside it, hoping the verdict runs on that one.
    with _server(kind) as server:
        rogue = issuance(world.rogue, "api.example.com")
        index = server.log.add_precert(rogue.precert(), rogue.chain())
        if swapped:
            genuine = issuance(world.ca, "api.example.com", key=world.primary)
            server.log.swap_precert(index, genuine.precert())
        code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    (record,) = records
    if swapped:
        assert code == 3 and record["kind"] == "log_error"
        assert "precertificate" in record["reason"]
    else:
        assert code == 1 and record["kind"] == "unexpected"
