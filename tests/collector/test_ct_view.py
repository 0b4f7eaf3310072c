"""The collector's CT view: ``certpin ct watch`` → ``POST /api/ct`` → ``GET /api/ct`` and the
dashboard's ``/ct`` page, on a real collector and a real loopback CT log, SQLite and Postgres."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server

from _support.pki import make_key, new_root, spki_pin
from certpin.cli import main as cli_main
from certpin.collector.ct_records import CTLimits
from collector._helpers import CollectorServer
from ct._certs import issuance
from ct.conftest import World, write_log_list

HOST = "api.example.com"


@pytest.fixture(scope="module")
def world() -> World:
    return World(
        ca=new_root("CT View Root").issue_intermediate("CT View Intermediate"),
        rogue=new_root("Rogue Root").issue_intermediate("Rogue Intermediate"),
        primary=make_key("p256"),
        backup=make_key("p256"),
    )


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectorServer]:
    if request.param == "sqlite":
        db, options = str(tmp_path / "db" / "certpin.sqlite3"), {}
    else:
        db = request.getfixturevalue("pg_url")
        options = {"db_schema": request.getfixturevalue("pg_schema")}
    with CollectorServer(db, rate_limit=None, **options) as srv:
        yield srv


@dataclass(frozen=True)
class Logged:
    """The loopback log, the pins of what it holds, and ``ct watch`` options to watch it."""

    log_server: RFC6962Server
    pins: dict[str, str]
    argv: list[str]


@pytest.fixture
def ct_log(world: World, tmp_path: Path) -> Iterator[Logged]:
    """A log holding the pinned certificate, a rogue one, and a rogue precert + final pair;
    a policy pinning the first and a log list naming the log."""
    with RFC6962Server(TestLog()) as log_server:
        log = log_server.log
        pinned = issuance(world.ca, HOST, key=world.primary)
        rogue = issuance(world.rogue, HOST, "www.example.com")
        pair = issuance(world.rogue, HOST, key=make_key("p256"))
        log.add_x509(pinned.final(), pinned.chain())
        log.add_x509(rogue.final(), rogue.chain())
        log.add_precert(pair.precert(), pair.chain())
        log.add_x509(pair.final(), pair.chain())
        pins = {
            "pinned": spki_pin(world.primary.public_key()),
            "rogue": spki_pin(rogue.key.public_key()),
            "pair": spki_pin(pair.key.public_key()),
        }
        policy = world.policy(tmp_path / "policy.json")
        log_list = write_log_list(tmp_path / "log_list.json", log_server)
        yield Logged(log_server, pins, ["--policy", str(policy), "--log-list", str(log_list)])


def _watch(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    code = cli_main.main(["ct", "watch", "--once", "--json", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def _token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "collector.token"
    path.write_text(token + "\n")
    return path


def test_ct_watch_webhook_fills_the_collector_ct_view(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: CollectorServer, ct_log: Logged
) -> None:
    log_server, pins = ct_log.log_server, ct_log.pins
    argv = [*ct_log.argv, "--webhook", f"{server.url}/api/ct"]
    argv += ["--webhook-token-file", str(_token_file(tmp_path, server.token))]
    code, records, err = _watch(capsys, *argv)
    assert code == 1, err
    assert "webhook" not in err  # every POST was taken
    assert sorted(r["spki_pin"] for r in records if r["kind"] == "unexpected") == sorted(
        [pins["rogue"], pins["pair"]]
    )
    # A second run without state sends the same two alerts again: stored once.
    assert _watch(capsys, *argv)[0] == 1
    with server.client() as client:
        answer = client.get("/api/ct", params={"host": HOST}, headers=server.auth)
        other = client.get("/api/ct", params={"host": "exact.example.org"}, headers=server.auth)
        page = client.get("/ct", headers=server.auth)
        index = client.get("/", headers=server.auth)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["certificates"]
    assert sorted(r["spki_pin"] for r in rows) == sorted([pins["rogue"], pins["pair"]])
    assert {r["kind"] for r in rows} == {"unexpected"} and {r["host"] for r in rows} == {HOST}
    assert [r["duplicates"] for r in rows] == [1, 1]  # the second run's copies
    # The precertificate and its final certificate are one issuance: one row.
    pair = next(r for r in rows if r["spki_pin"] == pins["pair"])
    assert pair["entry_type"] == "precert" and pair["index"] == 2
    rogue = next(r for r in rows if r["spki_pin"] == pins["rogue"])
    assert rogue["names"] == [HOST, "www.example.com"] and rogue["index"] == 1
    assert rogue["issuer"].startswith("CN=Rogue Intermediate") and rogue["log"] == log_server.url
    assert rogue["not_before"].endswith("Z") and rogue["first_seen"].endswith("Z")
    assert other.json()["certificates"] == []
    # The dashboard lists them under their host, linked from the index page.
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert HOST in page.text and pins["rogue"] in page.text and pins["pair"] in page.text
    assert "CN=Rogue Intermediate" in page.text and pins["pinned"] not in page.text
    assert 'href="/ct"' in index.text


def test_the_json_output_piped_as_ndjson_is_stored_once(
    capsys: pytest.CaptureFixture[str], server: CollectorServer, ct_log: Logged
) -> None:
    pins = ct_log.pins
    code, records, err = _watch(capsys, *ct_log.argv)
    assert code == 1, err
    body = "".join(json.dumps(r) + "\n" for r in records)
    with server.client() as client:
        first = client.post("/api/ct", content=body, headers=server.auth)
        again = client.post("/api/ct", content=body, headers=server.auth)
        pinned = client.get("/api/ct", params={"kind": "pinned"}, headers=server.auth)
        unexpected = client.get("/api/ct", params={"kind": "unexpected"}, headers=server.auth)
    assert first.status_code == 201, first.text
    assert first.json() == {"records": 3, "stored": 3, "duplicates": 0}
    assert again.status_code == 200 and again.json() == {"records": 3, "stored": 0, "duplicates": 3}
    assert [r["spki_pin"] for r in pinned.json()["certificates"]] == [pins["pinned"]]
    assert len(unexpected.json()["certificates"]) == 2


# -- validation, authentication, bounds: each refusal with its accepted twin ----------------------


def _record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "unexpected",
        "hosts": [HOST],
        "names": [HOST],
        "spki_pin": "sha256/" + "A" * 43 + "=",
        "tbs_sha256": "ab" * 32,
        "log": "https://ct.example/2026h1/",
        "index": 7,
        "entry_type": "x509",
        "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2026-04-01T00:00:00Z",
        "issuer": "CN=Rogue",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()


@pytest.fixture
def sqlite_collector(tmp_path: Path) -> Iterator[CollectorServer]:
    with CollectorServer(str(tmp_path / "db" / "c.sqlite3"), rate_limit=None) as srv:
        yield srv


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_record(kind="suspicious"), "field 'kind'"),
        (_record(hosts=_DROP), "field 'hosts' is missing"),
        (_record(hosts=[]), "field 'hosts'"),
        (_record(hosts=["exa mple.com"]), "field 'hosts'[0]"),
        (_record(names=[HOST, 7]), "field 'names'[1]"),
        (_record(spki_pin="sha1/nope"), "field 'spki_pin'"),
        (_record(tbs_sha256="AB" * 32), "field 'tbs_sha256'"),
        (_record(log="ftp://ct.example/"), "field 'log'"),
        (_record(index=-1), "field 'index'"),
        (_record(index=True), "field 'index'"),
        (_record(entry_type="cert"), "field 'entry_type'"),
        (_record(not_after="next tuesday"), "field 'not_after'"),
        (_record(issuer=["CN=x"]), "field 'issuer'"),
        (_record(colour="red"), "unknown field 'colour'"),
        ({"kind": "log_error", "log": "https://ct.example/"}, "field 'reason'"),
        ({"event": "monitor_change", "certificate": _record()}, "field 'event'"),
        (
            {"event": "ct_unexpected", "certificate": _record(index="7")},
            "certificate: field 'index'",
        ),
        ([_record()], "JSON object"),
    ],
)
def test_a_bad_record_is_a_400_naming_the_field(
    sqlite_collector: CollectorServer, body: Any, message: str
) -> None:
    with sqlite_collector.client() as client:
        answer = client.post("/api/ct", content=json.dumps(body), headers=sqlite_collector.auth)
        rows = client.get("/api/ct", headers=sqlite_collector.auth).json()["certificates"]
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"], answer.json()
    assert rows == []  # nothing of a refused body is stored


def test_the_line_of_a_bad_ndjson_record_is_named_and_nothing_is_stored(
    sqlite_collector: CollectorServer,
) -> None:
    good = json.dumps(_record())
    bad = json.dumps(_record(index=2**63))
    with sqlite_collector.client() as client:
        answer = client.post("/api/ct", content=f"{good}\n\n{bad}\n", headers=sqlite_collector.auth)
        rows = client.get("/api/ct", headers=sqlite_collector.auth).json()["certificates"]
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("line 3: field 'index'")
    assert rows == []


def test_every_accepted_shape_is_stored(sqlite_collector: CollectorServer) -> None:
    """The twins of the refusals: a record, the webhook body, a pretty-printed record, nulls
    where the watcher could not read a field (fail closed), a log error."""
    unread = _record(spki_pin=None, tbs_sha256=None, not_before=None, not_after=None, issuer=None)
    bodies = [
        json.dumps(_record()),
        json.dumps({"event": "ct_unexpected", "time": "2026-05-01T10:05:00Z",
                    "certificate": _record(tbs_sha256="cd" * 32), "message": "m"}),
        json.dumps(_record(tbs_sha256="ef" * 32, hosts=["**.wild.example.net"]), indent=2),
        json.dumps(unread),
        json.dumps({"kind": "log_error", "log": "https://ct.example/", "reason": "forked"}),
    ]  # fmt: skip
    with sqlite_collector.client() as client:
        answers = [client.post("/api/ct", content=b, headers=sqlite_collector.auth) for b in bodies]
        listing = client.get("/api/ct", headers=sqlite_collector.auth).json()
        wild = client.get(
            "/api/ct", params={"host": "**.WILD.example.net"}, headers=sqlite_collector.auth
        ).json()
        page = client.get("/ct", headers=sqlite_collector.auth).text
    assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    assert len(listing["certificates"]) == 4
    assert [e["reason"] for e in listing["log_errors"]] == ["forked"]
    assert [r["tbs_sha256"] for r in wild["certificates"]] == ["ef" * 32]
    nulls = next(r for r in listing["certificates"] if r["tbs_sha256"] is None)
    assert nulls["spki_pin"] is None and nulls["index"] == 7
    assert "forked" in page and "https://ct.example/" in page


def test_the_token_is_required(sqlite_collector: CollectorServer) -> None:
    body = json.dumps(_record())
    with sqlite_collector.client() as client:
        none = client.post("/api/ct", content=body)
        wrong = client.post("/api/ct", content=body, headers={"Authorization": "Bearer nope"})
        read = client.get("/api/ct")
        page = client.get("/ct", follow_redirects=False)
        ok = client.post("/api/ct", content=body, headers=sqlite_collector.auth)
    assert none.status_code == wrong.status_code == read.status_code == 401
    assert none.headers["www-authenticate"] == 'Bearer realm="certpin"'
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert ok.status_code == 201


def test_the_ct_token_may_post_records_and_nothing_else(tmp_path: Path) -> None:
    body = json.dumps(_record())
    ct = {"Authorization": "Bearer ct-only-token"}
    with (
        CollectorServer(
            str(tmp_path / "c.sqlite3"), rate_limit=None, ct_token="ct-only-token"
        ) as srv,
        srv.client() as client,
    ):
        posted = client.post("/api/ct", content=body, headers=ct)
        # ...and only that: every read and the dashboard refuse it
        reads = [
            client.get(path, headers=ct).status_code
            for path in ("/api/ct", "/api/reports", "/api/summary")
        ]
        dashboard = client.get("/ct", headers=ct, follow_redirects=False)
        form = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        login = client.post("/login", data={"token": "ct-only-token", "csrf": csrf.group(1)})
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)  # the form sent again
        assert csrf is not None
        admin = client.post("/login", data={"token": srv.token, "csrf": csrf.group(1)})
        again = client.post("/api/ct", content=body, headers=srv.auth)  # the admin token too
        other = client.post("/api/ct", content=body, headers={"Authorization": "Bearer ct-only"})
    assert posted.status_code == 201, posted.text
    assert reads == [401, 401, 401]
    assert dashboard.status_code == 401
    assert login.status_code == 401 and "Wrong token" in login.text
    assert admin.status_code == 303 and "set-cookie" in admin.headers  # the twin: the form works
    assert again.status_code == 200  # a duplicate, accepted
    assert other.status_code == 401  # a prefix of it is not it


def test_the_ct_token_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTPIN_CT_TOKEN", "from-env")
    body = json.dumps(_record())
    with CollectorServer(str(tmp_path / "c.sqlite3"), rate_limit=None) as srv:
        with srv.client() as client:
            ok = client.post("/api/ct", content=body, headers={"Authorization": "Bearer from-env"})
            read = client.get("/api/ct", headers={"Authorization": "Bearer from-env"})
    assert (ok.status_code, read.status_code) == (201, 401)
    monkeypatch.delenv("CERTPIN_CT_TOKEN")
    with CollectorServer(str(tmp_path / "d.sqlite3"), rate_limit=None) as srv:
        with srv.client() as client:
            unset = client.post(
                "/api/ct", content=body, headers={"Authorization": "Bearer from-env"}
            )
    assert unset.status_code == 401  # no CT token unless one is set


def test_bodies_over_the_limits_are_refused(sqlite_collector: CollectorServer) -> None:
    limits = CTLimits()
    line = json.dumps(_record()) + "\n"
    many = line * (limits.max_records + 1)
    huge = json.dumps(_record(issuer="x" * limits.max_text)) + "\n"
    with sqlite_collector.client() as client:
        too_many = client.post("/api/ct", content=many, headers=sqlite_collector.auth)
        too_big = client.post(
            "/api/ct", content=huge * (limits.max_bytes // len(huge) + 1),
            headers=sqlite_collector.auth,
        )  # fmt: skip
        long_issuer = client.post(
            "/api/ct",
            content=json.dumps(_record(issuer="x" * (limits.max_text + 1))),
            headers=sqlite_collector.auth,
        )
        at_limit = client.post("/api/ct", content=line * limits.max_records,
                               headers=sqlite_collector.auth)  # fmt: skip
    assert too_many.status_code == 400 and "too many records" in too_many.json()["error"]
    assert too_big.status_code == 413
    assert long_issuer.status_code == 400 and "field 'issuer'" in long_issuer.json()["error"]
    # The twin: exactly max_records copies of one record is one row and the rest duplicates.
    assert at_limit.status_code == 201
    assert at_limit.json() == {"records": 1000, "stored": 1, "duplicates": 0}


def test_hostile_text_is_shown_escaped(sqlite_collector: CollectorServer) -> None:
    body = json.dumps(_record(issuer="<script>alert(1)</script>", names=["<b>x</b>"]))
    with sqlite_collector.client() as client:
        assert (
            client.post("/api/ct", content=body, headers=sqlite_collector.auth).status_code == 201
        )
        page = client.get("/ct", headers=sqlite_collector.auth)
    assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<b>x</b>" not in page.text and "&lt;b&gt;x&lt;/b&gt;" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_a_bad_query_is_a_400(sqlite_collector: CollectorServer) -> None:
    with sqlite_collector.client() as client:
        answers = [
            client.get("/api/ct", params=params, headers=sqlite_collector.auth)
            for params in ({"kind": "log_error"}, {"host": "a b"}, {"colour": "red"}, {})
        ]
        page = client.get("/ct", params={"x": "1"}, headers=sqlite_collector.auth)
    assert [a.status_code for a in answers] == [400, 400, 400, 200]
    assert page.status_code == 400


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the token"), ("two words\n", "expected one token")],
)
def test_a_bad_webhook_token_file_is_exit_2_naming_the_file(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    world: World,
    content: str | None,
    message: str,
) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    policy = world.policy(tmp_path / "policy.json")
    log_list = tmp_path / "log_list.json"
    log_list.write_text(json.dumps({"version": "1", "operators": []}))
    code = cli_main.main(
        ["ct", "watch", "--policy", str(policy), "--log-list", str(log_list), "--once",
         "--webhook", "http://127.0.0.1:9/api/ct", "--webhook-token-file", str(token)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert str(token) in err and message in err


def test_a_token_file_without_a_webhook_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, world: World
) -> None:
    token = _token_file(tmp_path, "t")
    policy = world.policy(tmp_path / "policy.json")
    code = cli_main.main(
        ["ct", "hook", "--policy", str(policy), "--webhook-token-file", str(token)]
    )
    assert code == 2
    assert "--webhook-token-file needs --webhook" in capsys.readouterr().err


def test_the_webhook_sends_the_bearer_token(sqlite_collector: CollectorServer) -> None:
    from certpin.lifecycle.monitor.state import Webhook, WebhookError

    event = {"event": "ct_unexpected", "certificate": _record()}
    url = f"{sqlite_collector.url}/api/ct"
    assert Webhook(url, token=sqlite_collector.token).post(event)
    assert not Webhook(url).post(event)  # the collector refuses it without the token (401)
    assert sqlite_collector.token not in repr(Webhook(url, token=sqlite_collector.token))
    with pytest.raises(WebhookError, match="token"):
        Webhook(url, token="line\r\nX-Injected: 1")
    with httpx.Client(base_url=sqlite_collector.url) as client:
        rows = client.get("/api/ct", headers=sqlite_collector.auth).json()["certificates"]
    assert len(rows) == 1


def test_a_precertificate_and_its_final_certificate_are_one_row(
    sqlite_collector: CollectorServer,
) -> None:
    precert = _record(entry_type="precert", index=3)
    final = _record(entry_type="x509", index=4, kind="unexpected")
    other = _record(entry_type="x509", index=5, tbs_sha256="12" * 32)  # its twin: another TBS
    with sqlite_collector.client() as client:
        answers = [
            client.post("/api/ct", content=json.dumps(r), headers=sqlite_collector.auth).json()
            for r in (precert, final, other)
        ]
        rows = client.get("/api/ct", headers=sqlite_collector.auth).json()["certificates"]
    assert [a["stored"] for a in answers] == [1, 0, 1]
    assert sorted((r["index"], r["entry_type"], r["duplicates"]) for r in rows) == [
        (3, "precert", 1),
        (5, "x509", 0),
    ]


def test_a_pinned_row_sent_again_as_unexpected_becomes_unexpected(
    sqlite_collector: CollectorServer,
) -> None:
    with sqlite_collector.client() as client:
        for kind in ("pinned", "pinned", "unexpected", "pinned"):
            body = json.dumps(_record(kind=kind))
            assert client.post("/api/ct", content=body, headers=sqlite_collector.auth).is_success
        rows = client.get("/api/ct", headers=sqlite_collector.auth).json()["certificates"]
    assert [(r["kind"], r["duplicates"]) for r in rows] == [("unexpected", 3)]
