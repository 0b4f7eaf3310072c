"""``certpin ct watch --once --json`` over both kinds of log: each scenario with its twin."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server, TiledServer

from _support.pki import make_key, spki_pin
from ct._certs import issuance
from ct.conftest import World, watch_once, write_log_list

KINDS = ["rfc6962", "tiled"]


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest):
    cls = TiledServer if request.param == "tiled" else RFC6962Server
    with cls(TestLog(static=request.param == "tiled")) as srv:
        yield srv


def _watch(capsys, policy: Path, lst: Path, *extra: str):
    return watch_once(capsys, str(policy), str(lst), *extra)


def _log_one(server, world: World, *names: str, key=None, rogue=False, precert=False):
    i = issuance(world.rogue if rogue else world.ca, *names, key=key)
    if precert:
        return server.log.add_precert(i.precert(), i.chain())
    return server.log.add_x509(i.final(), i.chain())


# -- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "kind", "code"),
    [
        ("primary", "pinned", 0),
        ("backup", "pinned", 0),
        ("rogue", "unexpected", 1),
        ("other key, good CA", "unexpected", 1),
    ],
)
def test_the_verdict_decides_each_logged_key(
    capsys, world, policy, server, tmp_path, who, kind, code
):
    key = {"primary": world.primary, "backup": world.backup}.get(who)
    _log_one(server, world, "api.example.com", key=key, rogue=who == "rogue")
    code_, records, err = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    assert code_ == code, err
    (record,) = records
    assert record["kind"] == kind
    assert record["hosts"] == ["api.example.com"]
    assert record["names"] == ["api.example.com"]
    assert record["log"] == server.url and record["index"] == 0
    assert record["entry_type"] == "x509"
    if key is not None:
        assert record["spki_pin"] == spki_pin(key.public_key())
    assert set(record) == {
        "kind",
        "hosts",
        "names",
        "spki_pin",
        "tbs_sha256",
        "log",
        "index",
        "entry_type",
        "not_before",
        "not_after",
        "issuer",
    }
    assert record["not_after"].endswith("Z") and len(record["tbs_sha256"]) == 64
    assert "Rogue" in record["issuer"] if who == "rogue" else "CT Test" in record["issuer"]


def test_a_rogue_certificate_cannot_borrow_the_pinned_ca_from_its_stored_chain(
    capsys, world, server, tmp_path
):
    # The policy pins the owner's intermediate (and a spare CA). The rogue certificate's stored
    # chain lists that intermediate, but the intermediate did not sign it.
    ca_pin = spki_pin(world.ca.cert.public_key())
    spare = spki_pin(make_key("p256").public_key())
    policy = world.policy(tmp_path / "p.json", {"ca.example.com": {"pins": [ca_pin, spare]}})
    genuine = issuance(world.ca, "ca.example.com")
    server.log.add_x509(genuine.final(), genuine.chain())
    rogue = issuance(world.rogue, "ca.example.com")
    server.log.add_x509(rogue.final(), genuine.chain())  # the genuine CA, claimed
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    assert code == 1
    assert [r["kind"] for r in records] == ["pinned", "unexpected"]


# -- one issuance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rogue", [True, False])
def test_a_precertificate_and_its_final_certificate_are_one_issuance(
    capsys, world, policy, server, tmp_path, rogue
):
    i = issuance(
        world.rogue if rogue else world.ca, "api.example.com", key=None if rogue else world.primary
    )
    first = server.log.add_precert(i.precert(), i.chain())
    server.log.add_x509(i.final([server.log.sct(first)]), i.chain())
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    assert code == (1 if rogue else 0)
    (record,) = records
    assert record["entry_type"] == "precert" and record["index"] == 0
    assert record["kind"] == ("unexpected" if rogue else "pinned")


def test_two_issuances_with_one_key_are_two_records(capsys, world, policy, server, tmp_path):
    key = make_key("p256")
    for _ in range(2):
        i = issuance(world.rogue, "api.example.com", key=key)
        first = server.log.add_precert(i.precert(), i.chain())
        server.log.add_x509(i.final([server.log.sct(first)]), i.chain())
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    assert code == 1
    assert [r["index"] for r in records] == [0, 2]
    assert len({r["tbs_sha256"] for r in records}) == 2


def test_one_certificate_in_two_logs_is_one_record(capsys, world, policy, tmp_path):
    with RFC6962Server(TestLog()) as a, TiledServer(TestLog(static=True)) as b:
        i = issuance(world.rogue, "api.example.com")
        for srv in (a, b):
            srv.log.add_x509(i.final(), i.chain())
        code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", a, b))
    assert code == 1
    assert len(records) == 1


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("covered", [True, False])
def test_a_pinned_host_buried_among_twenty_names(capsys, world, policy, server, tmp_path, covered):
    names = [f"host{n}.unrelated.example" for n in range(20)]
    if covered:
        names.insert(13, "api.example.com")
    _log_one(server, world, *names, rogue=True)
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", server))
    if covered:
        assert code == 1
        (record,) = records
        assert record["hosts"] == ["api.example.com"] and len(record["names"]) == 21
    else:
        assert (code, records) == (0, [])


COVERAGE = [
    (("a.b.wild.example.net",), ["**.wild.example.net"]),
    (("wild.example.net",), ["**.wild.example.net"]),
    (("x.one.example.net",), ["*.one.example.net"]),
    (("x.y.one.example.net",), []),
    (("one.example.net",), []),
    (("deep.sub.inc.example.org",), ["inc.example.org"]),
    (("inc.example.org",), ["inc.example.org"]),
    (("sub.exact.example.org",), []),
    (("exact.example.org",), ["exact.example.org"]),
    (("API.Example.COM",), ["api.example.com"]),
    (("*.example.com",), ["api.example.com"]),
    (("*.api.example.com",), []),
    (("*.wild.example.net",), ["**.wild.example.net"]),
    (("*.example.org",), ["exact.example.org", "inc.example.org"]),
    (("www.example.com", "shop.example.net"), []),
]


@pytest.mark.parametrize(("names", "hosts"), COVERAGE)
def test_coverage_follows_the_policy_lookup(capsys, world, policy, rfc_log, tmp_path, names, hosts):
    _log_one(rfc_log, world, *names, rogue=True)
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", rfc_log))
    assert [r["hosts"] for r in records] == ([hosts] if hosts else [])
    assert code == (1 if hosts else 0)


@pytest.mark.parametrize(("cn", "covered"), [("api.example.com", True), ("www.example.com", False)])
def test_the_common_name_counts_when_there_are_no_dns_names(
    capsys, world, policy, rfc_log, tmp_path, cn, covered
):
    i = issuance(world.rogue, cn=cn, san=False)
    rfc_log.log.add_x509(i.final(), i.chain())
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", rfc_log))
    assert (code, len(records)) == ((1, 1) if covered else (0, 0))


def test_an_expired_rule_pins_nothing(capsys, world, rfc_log, tmp_path):
    pins = [spki_pin(world.primary.public_key()), spki_pin(world.backup.public_key())]
    past = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    policy = tmp_path / "p.json"
    policy.write_text(
        json.dumps(
            {
                "domains": {
                    "old.example.com": {"pins": pins, "expires": past},
                    "report.example.com": {"pins": pins, "enforce": False},
                }
            }
        )
    )
    _log_one(rfc_log, world, "old.example.com", rogue=True)
    _log_one(rfc_log, world, "report.example.com", rogue=True)
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", rfc_log))
    # report-only still means "not the pinned key"; an expired rule pins nothing.
    assert code == 1
    assert [r["hosts"] for r in records] == [["report.example.com"]]
