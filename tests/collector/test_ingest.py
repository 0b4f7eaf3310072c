"""POST /reports against a real uvicorn server and a real SQLite file: dialects, bad input,
idempotency, auth, the read API, health, OpenAPI and bundle hosting."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.pki import PKI, make_pki
from certpin.collector.store import SCHEMA_VERSION
from collector._helpers import (
    TRUSTKIT_SAMPLE,
    CollectorServer,
    certpin_report,
    dumps,
    pin_of,
    rfc7469_report,
    trustkit_android_report,
    trustkit_ios_report,
)


def post(client: httpx.Client, body: bytes | dict[str, Any]) -> httpx.Response:
    data = body if isinstance(body, bytes) else dumps(body)
    return client.post("/reports", content=data, headers={"Content-Type": "application/json"})


# -- every dialect is accepted ---------------------------------------------------------------------


def test_trustkit_sample_is_accepted_as_is(sqlite_server: CollectorServer) -> None:
    with sqlite_server.client() as client:
        response = post(client, TRUSTKIT_SAMPLE.read_bytes())
        assert response.status_code == 201, response.text
        rows = client.get("/api/reports", headers=sqlite_server.auth).json()["reports"]
    assert len(rows) == 1
    row = rows[0]
    assert row["dialect"] == "trustkit-ios"
    assert row["hostname"] == "www.datatheorem.com"
    assert row["app"] == "com.datatheorem.testtrustkit2"
    assert row["app_vendor_id"] == "599F9C00-92DC-4B5C-9464-7971F01F8370"  # 2015 app-identifier
    assert row["served_chain"] == []
    assert len(row["validated_chain"]) == 3
    # The sample's pins match none of its chain: the leaf key is the unexpected one.
    assert row["unexpected_pin"] == "sha256/0SDf3cRToyZJaMsoS17oF72VMavLxj/N7WBNasNuiR8="
    assert "www.datatheorem.com" in row["unexpected_subject"]


@pytest.mark.parametrize(
    ("make", "dialect"),
    [
        (rfc7469_report, "rfc7469"),
        (trustkit_ios_report, "trustkit-ios"),
        (trustkit_android_report, "trustkit-android"),
        (certpin_report, "certpin"),
    ],
)
def test_each_dialect_is_accepted_and_normalised(
    sqlite_server: CollectorServer, report_pki: PKI, make: Any, dialect: str
) -> None:
    body = make(report_pki)
    with sqlite_server.client() as client:
        assert post(client, body).status_code == 201
        row = client.get("/api/reports", headers=sqlite_server.auth).json()["reports"][0]
    assert row["dialect"] == dialect
    assert row["hostname"] == "reports.example.test"
    assert row["unexpected_pin"] == "sha256/" + pin_of(report_pki.leaf.der())
    assert len(row["validated_chain"]) == 3
    if dialect == "trustkit-android":
        assert row["port"] is None  # Android sends 0: unknown
        assert row["client_time"] is None  # device local time with a literal Z: not UTC
        assert row["app_version"] == "N/A"
    else:
        assert row["port"] == 443


def test_a_report_whose_leaf_matches_a_known_pin_has_no_unexpected_key(
    sqlite_server: CollectorServer, report_pki: PKI
) -> None:
    body = rfc7469_report(report_pki)
    body["known-pins"] = [f'pin-sha256="{pin_of(report_pki.leaf.der())}"']
    with sqlite_server.client() as client:
        assert post(client, body).status_code == 201
        row = client.get("/api/reports", headers=sqlite_server.auth).json()["reports"][0]
    assert row["unexpected_pin"] is None


# -- every bad input is a 4xx with a reason --------------------------------------------------------


def _bad_bodies(pki: PKI) -> list[tuple[str, bytes, int, str]]:
    good = rfc7469_report(pki)

    def variant(**changes: Any) -> bytes:
        body = dict(good)
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is ...:
                body.pop(key)
            else:
                body[key] = value
        return dumps(body)

    pem = good["validated-certificate-chain"][0]
    deep = b"[" * 100 + b"]" * 100
    return [
        ("not json", b"{nope", 400, "invalid JSON"),
        ("array", b"[]", 400, "JSON object"),
        ("not utf-8", b'{"a": "\xff"}', 400, "UTF-8"),
        ("NaN", b'{"hostname": NaN}', 400, "NaN"),
        ("duplicate key", b'{"hostname": "a", "hostname": "b"}', 400, "duplicate"),
        ("too deep", deep, 400, "nested"),
        ("too big", b'{"x": "' + b"a" * 70_000 + b'"}', 413, "exceeds"),
        ("infinite number", b'{"x": 1e999}', 400, "out of range"),
        ("huge integer", b'{"x": ' + b"9" * 5000 + b"}", 400, "invalid JSON number"),
        ("unpaired surrogate", variant(app_version="1\ud800"), 400, "unpaired surrogate"),
        ("no hostname", variant(hostname=...), 400, "'hostname'"),
        ("no port", variant(port=...), 400, "'port'"),
        ("no pins", variant(known_pins=...), 400, "'known-pins'"),
        (
            "no chain",
            variant(served_certificate_chain=..., validated_certificate_chain=...),
            400,
            "chain",
        ),
        ("bad host", variant(hostname="a..b"), 400, "hostname"),
        ("port type", variant(port="443"), 400, "'port'"),
        ("port bool", variant(port=True), 400, "'port'"),
        ("port range", variant(port=70000), 400, "'port'"),
        ("bad pin", variant(known_pins=['pin-sha256="abc"']), 400, "known-pins[0]"),
        ("sha1 pin", variant(known_pins=['pin-sha1="' + "A" * 27 + '="']), 400, "known-pins[0]"),
        (
            "invalid PEM base64",
            variant(validated_certificate_chain=[pem.replace("M", "*", 3)]),
            400,
            "validated-certificate-chain[0]",
        ),
        (
            "PEM of garbage",
            variant(
                validated_certificate_chain=[
                    "-----BEGIN CERTIFICATE-----\n"
                    + base64.b64encode(b"garbage").decode()
                    + "\n-----END CERTIFICATE-----"
                ]
            ),
            400,
            "not an X.509 certificate",
        ),
        ("two PEMs in one", variant(served_certificate_chain=[pem + "\n" + pem]), 400, "single"),
        ("11 certificates", variant(served_certificate_chain=[pem] * 11), 400, "more than 10"),
        ("chain not a list", variant(served_certificate_chain=pem), 400, "array"),
        ("bool as string", variant(include_subdomains="yes"), 400, "include-subdomains"),
        ("bad report-id", variant(report_id="a b"), 400, "report-id"),
        ("bad mode", dumps({**certpin_report(pki), "mode": "maybe"}), 400, "mode"),
        ("long string", variant(noted_hostname="a" * 300), 400, "noted-hostname"),
        (
            "too many fields",
            dumps({**good, **{f"x-{i}": i for i in range(70)}}),
            400,
            "too many fields",
        ),
    ]


def test_every_bad_input_is_a_4xx_with_a_reason(
    sqlite_server: CollectorServer, report_pki: PKI
) -> None:
    with sqlite_server.client() as client:
        for name, body, status, reason in _bad_bodies(report_pki):
            response = post(client, body)
            assert response.status_code == status, (name, response.text)
            assert reason in response.json()["error"], (name, response.text)
        # …and the good twin of all of them is accepted; nothing bad was stored.
        assert post(client, rfc7469_report(report_pki)).status_code == 201
        rows = client.get("/api/reports", headers=sqlite_server.auth).json()["reports"]
    assert len(rows) == 1


def test_body_limit_is_enforced_while_streaming(sqlite_server: CollectorServer) -> None:
    """No Content-Length (chunked): the limit still applies, on the bytes actually read."""

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    with sqlite_server.client() as client:
        response = client.post("/reports", content=chunks())
        assert response.status_code == 413
        small = client.post("/reports", content=iter([b" " * 1024, b"{}"]))
        assert small.status_code == 400  # under the limit: parsed, then refused as a report
        assert "required field" in small.json()["error"]


def test_rate_limit_per_source(tmp_path: Path, report_pki: PKI) -> None:
    from certpin.collector.app import RateLimit

    with (
        CollectorServer(str(tmp_path / "r.db"), rate_limit=RateLimit(rate=0.5, burst=3)) as srv,
        srv.client() as client,
    ):
        statuses = [post(client, certpin_report(report_pki)).status_code for _ in range(5)]
        assert statuses[:3] == [201, 201, 201]
        assert statuses[3:] == [429, 429]
        refused = post(client, certpin_report(report_pki))
        assert int(refused.headers["Retry-After"]) >= 1
        assert "rate limit" in refused.json()["error"]


# -- idempotency -----------------------------------------------------------------------------------


def test_same_body_is_stored_once_and_counted(
    sqlite_server: CollectorServer, report_pki: PKI, tmp_path: Path
) -> None:
    body = rfc7469_report(report_pki)
    reordered = dict(reversed(list(body.items())))  # same report, other key order
    with sqlite_server.client() as client:
        first = post(client, body)
        second = post(client, reordered)
        third = post(client, body)
        other = post(client, {**body, "port": 8443})
        summary = client.get("/api/summary", headers=sqlite_server.auth).json()
    assert first.status_code == 201 and not first.json()["duplicate"]
    assert second.status_code == 200 and second.json()["duplicate"]
    assert third.json()["id"] == first.json()["id"]
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert summary["total"] == {"reports": 2, "duplicates": 2}


def test_report_id_is_the_idempotency_key(sqlite_server: CollectorServer, report_pki: PKI) -> None:
    body = certpin_report(report_pki)
    with sqlite_server.client() as client:
        first = post(client, body)
        retry = post(client, {**body, "date-time": "2025-01-02T03:04:06Z"})  # resent later
        fresh = post(client, {**body, "report-id": "another-id"})
    assert (first.status_code, retry.status_code, fresh.status_code) == (201, 200, 201)
    assert first.json()["report_key"] == f"id:{body['report-id']}"


def test_the_body_is_stored_as_received(sqlite_server: CollectorServer, report_pki: PKI) -> None:
    # Member order, spacing and escapes as the client sent them: nothing accepted is lost.
    report = certpin_report(report_pki)
    del report["report-id"]
    text = '{\n  "report-id" : "as-sent-1",\n' + dumps(report).decode()[1:].replace(
        '"hostname":', '"hostname" :'
    )
    with sqlite_server.client() as client:
        assert post(client, text.encode()).status_code == 201
    db = sqlite3.connect(sqlite_server.collector.store.engine.url.database or "")
    try:
        (stored,) = db.execute(
            "SELECT body FROM reports WHERE report_key = 'id:as-sent-1'"
        ).fetchone()
    finally:
        db.close()
    assert stored == text


def _answer(response: httpx.Response) -> tuple[int, str, str, str, set[str] | str]:
    body = response.json()
    return (
        response.status_code,
        response.headers["content-type"],
        response.headers["x-content-type-options"],
        response.headers["cache-control"],
        set(body) if response.status_code < 300 else body["error"],
    )


def test_ingest_under_a_root_path_answers_alike(tmp_path: Path, report_pki: PKI) -> None:
    # Mounted at / or under a root_path (a reverse proxy's prefix), Starlette's router answers
    # POST /reports the same: statuses, headers, bodies and errors.
    answers = []
    for name, root in (("plain", ""), ("prefixed", "/collector")):
        with CollectorServer(
            str(tmp_path / name / "db.sqlite3"), rate_limit=None, root_path=root
        ) as srv:
            body = rfc7469_report(report_pki)
            with srv.client() as client:
                answers.append(
                    [
                        _answer(post(client, body)),
                        _answer(post(client, body)),  # duplicate: 200
                        _answer(post(client, b"{")),
                        _answer(post(client, b"\xff{}")),
                        _answer(post(client, b"[1]")),
                        _answer(post(client, b" " * (64 * 1024 + 1))),
                    ]
                )
                rows = client.get("/api/reports", headers=srv.auth).json()["reports"]
            assert len(rows) == 1 and rows[0]["hostname"] == body["hostname"]
    plain, prefixed = answers
    assert plain == prefixed
    assert [a[0] for a in plain] == [201, 200, 400, 400, 400, 413]
    assert plain[0][1:4] == ("application/json", "nosniff", "no-store")
    assert plain[0][4] == {"id", "report_key", "duplicate"}


@pytest.mark.parametrize("root_path", ["", "/collector"], ids=["plain", "prefixed"])
def test_an_unexpected_error_is_a_500_and_the_server_keeps_serving(
    tmp_path: Path, report_pki: PKI, monkeypatch: pytest.MonkeyPatch, root_path: str
) -> None:
    calls = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise RuntimeError("bug")

    db = str(tmp_path / "e.sqlite3")
    with CollectorServer(db, rate_limit=None, root_path=root_path) as srv, srv.client() as client:
        with monkeypatch.context() as patch:
            patch.setattr("certpin.collector.app.normalize_report", broken)
            failed = post(client, rfc7469_report(report_pki))
        after = post(client, rfc7469_report(report_pki))
    assert calls == [1]
    assert failed.status_code == 500 and failed.json() == {"error": "internal error"}
    assert failed.headers["cache-control"] == "no-store"
    assert after.status_code == 201


def test_storage_is_sqlite_wal_with_synchronous_full(sqlite_server: CollectorServer) -> None:
    store = sqlite_server.collector.store
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        version = conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar()
        assert version == SCHEMA_VERSION


def test_schema_newer_than_the_tool_is_refused(tmp_path: Path) -> None:
    from certpin.collector.store import Store, StoreError

    path = tmp_path / "future.db"
    store = Store(str(path))
    store.migrate()
    store.close()
    # sqlite3's own context manager commits but never closes (3.13 warns): close explicitly.
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO schema_version VALUES (99)")
    store = Store(str(path))
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        store.migrate()
    store.close()


# -- the read API ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic dGVzdDp0ZXN0"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer t\xebst".encode("latin-1")},
    ],
)
def test_read_api_requires_the_token(sqlite_server: CollectorServer, headers: Any) -> None:
    with sqlite_server.client() as client:
        for path in ("/api/reports", "/api/summary"):
            response = client.get(path, headers=headers)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "access-control-allow-origin" not in response.headers
        assert client.get("/api/reports", headers=sqlite_server.auth).status_code == 200


def test_no_cors(sqlite_server: CollectorServer) -> None:
    with sqlite_server.client() as client:
        response = client.get(
            "/api/reports", headers={**sqlite_server.auth, "Origin": "https://evil.example"}
        )
        preflight = client.options(
            "/api/reports",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert preflight.status_code == 405


def test_filters_and_cursor_pagination(sqlite_server: CollectorServer) -> None:
    pkis = [make_pki((f"h{i}.example.test",)) for i in range(2)]
    with sqlite_server.client() as client:
        for i in range(5):
            for pki, app in zip(pkis, ("app.a", "app.b"), strict=True):
                body = rfc7469_report(pki, host=pki.leaf.hostnames[0])
                body["app-bundle-id"] = app
                body["port"] = 1000 + i
                assert post(client, body).status_code == 201
        auth = sqlite_server.auth
        everything = client.get("/api/reports", headers=auth, params={"limit": 1000}).json()
        assert len(everything["reports"]) == 10 and everything["next_cursor"] is None

        seen: list[int] = []
        params: dict[str, Any] = {"limit": 3, "host": "H0.example.test."}
        while True:
            page = client.get("/api/reports", headers=auth, params=params).json()
            seen += [r["id"] for r in page["reports"]]
            assert all(r["hostname"] == "h0.example.test" for r in page["reports"])
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert len(seen) == 5 and seen == sorted(seen, reverse=True)

        by_app = client.get("/api/reports", headers=auth, params={"app": "app.b"}).json()
        assert {r["app"] for r in by_app["reports"]} == {"app.b"}
        leaf_pin = "sha256/" + pin_of(pkis[1].leaf.der())
        by_pin = client.get("/api/reports", headers=auth, params={"pin": leaf_pin}).json()
        assert {r["hostname"] for r in by_pin["reports"]} == {"h1.example.test"}
        assert len(by_pin["reports"]) == 5
        future = client.get("/api/reports", headers=auth, params={"since": "2999-01-01"}).json()
        assert future["reports"] == []
        past = client.get("/api/reports", headers=auth, params={"until": "2000-01-01T00:00Z"})
        assert past.json()["reports"] == []

        summary = client.get("/api/summary", headers=auth).json()
        assert {h["hostname"]: h["reports"] for h in summary["hosts"]} == {
            "h0.example.test": 5,
            "h1.example.test": 5,
        }
        assert {(k["hostname"], k["reports"]) for k in summary["unexpected_keys"]} == {
            ("h0.example.test", 5),
            ("h1.example.test", 5),
        }
        assert {(a["app"], a["reports"]) for a in summary["apps"]} == {("app.a", 5), ("app.b", 5)}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'{"before": "1"}').decode()}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"host": "a..b"}, "host"),
        ({"pin": "sha1/abc"}, "pin"),
        ({"colour": "blue"}, "unknown query parameter"),
    ],
)
def test_bad_query_parameters_are_400(
    sqlite_server: CollectorServer, params: dict[str, str], reason: str
) -> None:
    with sqlite_server.client() as client:
        response = client.get("/api/reports", headers=sqlite_server.auth, params=params)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_hostile_strings_come_back_as_json_data(
    sqlite_server: CollectorServer, report_pki: PKI
) -> None:
    hostile = "<script>alert(1)</script>"
    body = rfc7469_report(report_pki)
    body["app-bundle-id"] = hostile
    body["app-version"] = "'; DROP TABLE reports; --"
    with sqlite_server.client() as client:
        assert post(client, body).status_code == 201
        response = client.get("/api/reports", headers=sqlite_server.auth, params={"app": hostile})
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    row = response.json()["reports"][0]
    assert row["app"] == hostile and row["app_version"] == "'; DROP TABLE reports; --"


# -- health, OpenAPI, bundles ----------------------------------------------------------------------


def test_healthz_and_openapi(sqlite_server: CollectorServer) -> None:
    with sqlite_server.client() as client:
        health = client.get("/healthz")
        spec = client.get("/openapi.json").json()
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert spec["openapi"].startswith("3.")
    assert {"/reports", "/api/reports", "/api/summary", "/healthz"} <= set(spec["paths"])


def test_healthz_reports_an_unreachable_database(tmp_path: Path) -> None:
    with CollectorServer(str(tmp_path / "h.db")) as srv, srv.client() as client:
        srv.collector.store.engine.dispose()
        (tmp_path / "h.db").unlink()
        (tmp_path / "h.db").mkdir()  # the path is now a directory: SQLite cannot open it
        response = client.get("/healthz")
    assert response.status_code == 503
    assert "database unavailable" in response.json()["error"]


def test_bundles_are_served_with_etag_and_cache_control(tmp_path: Path) -> None:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    (bundles / "pins.jws").write_text("header.payload.signature")
    (tmp_path / "secret.txt").write_text("not for you")
    with CollectorServer(str(tmp_path / "b.db"), bundles_dir=bundles) as srv, srv.client() as c:
        first = c.get("/bundles/pins.jws")
        assert first.status_code == 200 and first.text == "header.payload.signature"
        assert first.headers["etag"]
        assert "max-age=300" in first.headers["cache-control"]
        again = c.get("/bundles/pins.jws", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert c.get("/bundles/missing.jws").status_code == 404
        # httpx removes a literal "../" before sending; test_bundles sends every path trick
        # byte-exact over a socket.
        assert c.get("/bundles/%2e%2e/secret.txt").status_code == 404


def test_without_bundles_dir_there_is_no_bundles_route(sqlite_server: CollectorServer) -> None:
    with sqlite_server.client() as client:
        assert client.get("/bundles/pins.jws").status_code == 404


# -- overload and a report the database refuses ---------------------------------------------------


def test_a_full_write_queue_is_a_503_with_retry_after(
    tmp_path: Path, report_pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer is held inside its first commit; one more report waits in the queue
    # (max_queue=1); the next is refused at once. Released, the two held ones are stored.
    import threading

    from certpin.collector.store import Store

    real = Store.insert_batch
    entered, release = threading.Event(), threading.Event()

    def held(self: Store, items: Any) -> Any:
        entered.set()
        release.wait(10)
        return real(self, items)

    monkeypatch.setattr(Store, "insert_batch", held)
    with CollectorServer(
        str(tmp_path / "q.sqlite3"), rate_limit=None, max_queue=1, writer="thread"
    ) as srv:
        writer = srv.collector.writer
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_post_one, srv, certpin_report(report_pki))
            assert entered.wait(10)
            second = pool.submit(_post_one, srv, certpin_report(report_pki))
            deadline = time.monotonic() + 10
            while len(writer._items) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = _post_one(srv, certpin_report(report_pki))
            release.set()
            held_statuses = [first.result().status_code, second.result().status_code]
        with srv.client() as client:
            total = client.get("/api/summary", headers=srv.auth).json()["total"]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "collector overloaded; retry later"
    assert held_statuses == [201, 201]
    assert total == {"reports": 2, "duplicates": 0}


@pytest.mark.parametrize("option", ["max_batch", "max_queue"])
def test_batch_and_queue_sizes_must_be_positive(tmp_path: Path, option: str) -> None:
    from certpin.collector.app import Collector

    with pytest.raises(ValueError, match="at least 1"):
        Collector(str(tmp_path / "v.sqlite3"), "t", **{option: 0})


def test_a_report_the_database_cannot_reach_fails_with_its_batch(
    tmp_path: Path, report_pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transient fault (the database unreachable) is retried, then the whole batch fails at
    # once: no report-by-report retries while clients wait.
    import sqlalchemy as sa

    from certpin.collector.store import Store

    attempts: list[int] = []

    def unreachable(self: Store, items: Any) -> Any:
        attempts.append(len(items))
        raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(Store, "insert_batch", unreachable)
    with CollectorServer(str(tmp_path / "u.sqlite3"), rate_limit=None, writer="thread") as srv:
        response = _post_one(srv, certpin_report(report_pki))
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert attempts == [1, 1, 1, 1]


def test_a_report_the_database_refuses_fails_alone(
    tmp_path: Path, report_pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault that follows one report (a value the database refuses): not retried (it would
    # fail the same way), its batch is split; the others are stored and acknowledged, it 503s.
    from certpin.collector.store import Store

    real = Store.insert_batch
    attempts: list[tuple[int, bool]] = []  # (batch size, holds the poisoned report)

    def refusing(self: Store, items: Any) -> Any:
        poisoned = any(report.app_version == "poison" for report, _ in items)
        attempts.append((len(items), poisoned))
        if poisoned:
            raise RuntimeError("value refused by the database")
        return real(self, items)

    monkeypatch.setattr(Store, "insert_batch", refusing)
    bodies = [{**certpin_report(report_pki), "app-version": v} for v in ("a", "poison", "b", "c")]
    with CollectorServer(str(tmp_path / "p.sqlite3"), rate_limit=None, writer="thread") as srv:
        with ThreadPoolExecutor(len(bodies)) as pool:
            responses = list(pool.map(lambda b: _post_one(srv, b), bodies))
        with srv.client() as client:
            rows = client.get("/api/reports", headers=srv.auth).json()["reports"]
    statuses = [r.status_code for r in responses]
    assert statuses == [201, 503, 201, 201]
    assert responses[1].json()["error"] == "storage unavailable; retry later"
    assert sorted(r["app_version"] for r in rows) == ["a", "b", "c"]
    # Not transient, so never retried: the poisoned report alone is tried once, and a larger
    # batch holding it (if one formed) once, before the split.
    assert attempts.count((1, True)) == 1
    assert sum(1 for n, poisoned in attempts if poisoned and n > 1) <= 1


def _post_one(srv: CollectorServer, body: dict[str, Any]) -> httpx.Response:
    with srv.client() as client:
        return post(client, body)


def test_the_writer_thread_survives_a_failing_batch(
    tmp_path: Path, report_pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certpin.collector._writer import ThreadWriter

    real = ThreadWriter._commit
    calls: list[int] = []

    def once_broken(self: ThreadWriter, batch: Any) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("writer bug")
        real(self, batch)

    monkeypatch.setattr(ThreadWriter, "_commit", once_broken)
    with CollectorServer(str(tmp_path / "w.sqlite3"), rate_limit=None, writer="thread") as srv:
        with srv.client() as client:
            first = post(client, certpin_report(report_pki))
            second = post(client, certpin_report(report_pki))
            total = client.get("/api/summary", headers=srv.auth).json()["total"]
    assert first.status_code == 503 and second.status_code == 201
    assert total == {"reports": 1, "duplicates": 0}


def test_a_report_submitted_while_the_writer_stops_is_refused(tmp_path: Path) -> None:
    # Between stop() and the end of the thread, nothing may be queued that no one will take.
    from certpin.collector._writer import Overloaded, ThreadWriter
    from certpin.collector.alerts import AlertConfig, Alerter
    from certpin.collector.store import Store

    store = Store(str(tmp_path / "s.sqlite3"))
    store.migrate()
    writer = ThreadWriter(store, Alerter(store, AlertConfig()), max_batch=8, max_queue=8)

    async def run() -> list[str]:
        outcomes = []
        await writer.start()
        stopping = asyncio.create_task(writer.stop())
        await asyncio.sleep(0)  # stop() has flagged the writer and is joining the thread
        for _ in range(2):
            try:
                await asyncio.wait_for(writer.submit(None, None), 5)  # type: ignore[arg-type]
                outcomes.append("accepted")
            except Overloaded:
                outcomes.append("refused")
            await stopping
        return outcomes

    try:
        assert asyncio.run(run()) == ["refused", "refused"]
    finally:
        store.close()


def test_middleware_added_by_the_user_sees_post_reports(tmp_path: Path, report_pki: PKI) -> None:
    # Middleware someone adds (auth, metrics…) sees every request, POST /reports too.
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    seen: list[str] = []

    class Tag:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(f"{scope.get('method')} {scope.get('path')}")

            async def tagged(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message["headers"], (b"x-tag", b"1")]}
                await send(message)

            await self.app(scope, receive, tagged)

    srv = CollectorServer(str(tmp_path / "m.sqlite3"), rate_limit=None)
    srv.collector.app.add_middleware(Tag)  # before it starts, as Starlette requires
    with srv:
        with srv.client() as client:
            response = post(client, rfc7469_report(report_pki))
    assert response.status_code == 201 and response.headers["x-tag"] == "1"
    assert "POST /reports" in seen
