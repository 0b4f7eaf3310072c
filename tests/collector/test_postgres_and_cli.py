"""The collector on a real Postgres (unique schema per test), and `certpin serve` errors."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.pki import PKI
from certpin.cli.main import main
from certpin.cli.serve import http_parser, listen_socket
from certpin.collector.store import SCHEMA_VERSION, Store, StoreError
from collector._helpers import (
    TRUSTKIT_SAMPLE,
    CollectorProcess,
    CollectorServer,
    certpin_report,
    dumps,
    rfc7469_report,
    trustkit_android_report,
    trustkit_ios_report,
)


def test_postgres_ingest_idempotency_and_read_api(
    pg_url: str, pg_schema: str, report_pki: PKI
) -> None:
    bodies: list[bytes] = [TRUSTKIT_SAMPLE.read_bytes()]
    bodies += [
        dumps(make(report_pki))
        for make in (rfc7469_report, trustkit_ios_report, trustkit_android_report, certpin_report)
    ]
    with CollectorServer(pg_url, db_schema=pg_schema, rate_limit=None) as srv:
        with srv.client() as client:
            for body in bodies:
                assert client.post("/reports", content=body).status_code == 201
                assert client.post("/reports", content=body).status_code == 200
            rows = client.get("/api/reports", headers=srv.auth).json()["reports"]
            summary = client.get("/api/summary", headers=srv.auth).json()
            bad = client.post("/reports", content=b'{"hostname": 1}')
        store = srv.collector.store
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
            assert conn.exec_driver_sql("SELECT current_schema()").scalar() == pg_schema
    assert sorted(r["dialect"] for r in rows) == sorted(
        ["trustkit-ios", "rfc7469", "trustkit-ios", "trustkit-android", "certpin"]
    )
    assert summary["total"] == {"reports": 5, "duplicates": 5}
    assert bad.status_code == 400


def test_migration_is_idempotent_on_postgres(pg_url: str, pg_schema: str) -> None:
    store = Store(pg_url, schema=pg_schema)
    try:
        assert store.migrate() == store.migrate() == SCHEMA_VERSION
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--certfile", __file__], "--certfile and --keyfile go together"),
        (["--db", "mysql://x/y"], "unsupported database"),
        (["--db", "postgresql://nobody@127.0.0.1:1/none"], "cannot open database"),
        (["--db-schema", "Bad-Name"], "schema"),
    ],
)
def test_serve_refuses_bad_options_with_exit_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    monkeypatch.chdir(tmp_path)
    certpin_log = logging.getLogger("certpin")
    handlers, level = list(certpin_log.handlers), certpin_log.level
    assert main(["serve", *args]) == 2
    assert message in capsys.readouterr().err
    # The stderr log handler lasts as long as the command: none is left behind on a stream
    # that closes with the test (it broke later log calls), and the level is restored.
    assert certpin_log.handlers == handlers
    assert certpin_log.level == level


@pytest.mark.parametrize(("choice", "parser"), [("auto", "httptools"), ("h11", "h11")])
def test_serve_ingests_under_each_http_parser(
    choice: str, parser: str, tmp_path: Path, report_pki: PKI
) -> None:
    proc = CollectorProcess("--db", str(tmp_path / "c.sqlite3"), "--rate", "0", "--http", choice)
    try:
        assert f"HTTP parser {parser}" in proc.output.read_text()
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            created = client.post("/reports", content=dumps(certpin_report(report_pki)))
            too_big = client.post("/reports", content=b'{"x": "' + b"a" * 70_000 + b'"}')
            bad = client.post("/reports", content=b"{not json")
        assert created.status_code == 201 and created.json()["duplicate"] is False
        assert too_big.status_code == 413 and bad.status_code == 400
    finally:
        proc.stop()


def test_serve_http_httptools_without_httptools_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "httptools", None)  # import httptools -> ImportError
    assert main(["serve", "--http", "httptools", "--port", "0"]) == 2
    assert "httptools is not installed" in capsys.readouterr().err
    assert http_parser("auto") == "h11" and http_parser("h11") == "h11"


def test_serve_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--db" in out and "--bundles" in out and "CERTPIN_ADMIN_TOKEN" in out


@pytest.mark.parametrize(("proto", "nodelay"), [(socket.IPPROTO_TCP, True), (0, False)])
def test_serve_socket_turns_nagle_off_on_accepted_connections(proto: int, nodelay: bool) -> None:
    # asyncio sets TCP_NODELAY on a connection only when the listening socket's proto says TCP;
    # the proto-0 twin shows the trap `listen_socket` avoids (a JSON answer is two writes, and
    # with Nagle on the second waits for the client's delayed ACK).
    if proto:
        listener = listen_socket("127.0.0.1", 0)
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
    assert listener.proto == proto

    async def run() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            _, client = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            client.close()
            return value

    assert bool(asyncio.run(run())) is nodelay


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1.0\u0000evil", "contains a NUL character"),
        ("1.0\udc80", "contains an unpaired surrogate (U+DC80)"),
    ],
    ids=["nul", "surrogate"],
)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_text_no_database_can_store_is_a_400_naming_the_field(
    backend: str,
    value: str,
    reason: str,
    tmp_path: Path,
    report_pki: PKI,
    request: pytest.FixtureRequest,
) -> None:
    # JSON allows "\u0000"; Postgres text cannot hold it, so it would fail the whole batch.
    if backend == "sqlite":
        db, options = str(tmp_path / "nul.sqlite3"), {}
    else:
        db, options = (
            request.getfixturevalue("pg_url"),
            {"db_schema": request.getfixturevalue("pg_schema")},
        )
    body = {**certpin_report(report_pki), "app-version": value}
    with CollectorServer(db, rate_limit=None, **options) as srv:
        with srv.client() as client:
            bad = client.post("/reports", content=dumps(body))
            good = client.post("/reports", content=dumps({**body, "app-version": "1.0"}))
            total = client.get("/api/summary", headers=srv.auth).json()["total"]
    assert bad.status_code == 400
    assert bad.json()["error"] == f"field 'app-version': {reason}"
    assert good.status_code == 201 and total == {"reports": 1, "duplicates": 0}


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg2://u@127.0.0.1/test", "postgresql+pg8000://x/y"]
)
def test_only_the_psycopg_3_driver_is_accepted(url: str) -> None:
    with pytest.raises(StoreError, match="is not supported: use a postgresql://"):
        Store(url)
