"""Durability and scale-out against real collector subprocesses.

* ``kill -9`` during a load of concurrent POSTs: every acknowledged (2xx) report is stored.
* Two collector processes on one Postgres: no loss, no duplicate rows, duplicates counted.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.pki import PKI
from certpin.collector.store import Store
from collector._helpers import CollectorProcess, certpin_report, dumps

pytestmark = pytest.mark.slow

CLIENTS = 16


def _body(template: dict[str, Any], report_id: str) -> bytes:
    return dumps({**template, "report-id": report_id})


def _load_until_killed(proc: CollectorProcess, template: dict[str, Any]) -> tuple[set[str], int]:
    """Hammer ``proc`` from CLIENTS threads; kill -9 it once some reports are acked."""
    acked: set[str] = set()
    lock = threading.Lock()
    attempts = [0]
    stop = threading.Event()

    def worker() -> None:
        with httpx.Client(base_url=proc.url, timeout=5) as client:
            while not stop.is_set():
                report_id = uuid.uuid4().hex
                with lock:
                    attempts[0] += 1
                try:
                    response = client.post("/reports", content=_body(template, report_id))
                except httpx.HTTPError:
                    return  # the collector is gone
                if response.status_code in (200, 201):
                    with lock:
                        acked.add(f"id:{report_id}")

    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(CLIENTS):
            pool.submit(worker)
        deadline = time.monotonic() + 15
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no shutdown, no flush — only what was committed survives
        stop.set()
    return acked, attempts[0]


def _check_after_restart(db_args: list[str], store: Store, acked: set[str], attempts: int) -> None:
    restarted = CollectorProcess(*db_args, "--rate", "0")
    try:
        with httpx.Client(base_url=restarted.url, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        restarted.stop()
    stored = set(store.report_keys())
    assert acked, "the load produced no acknowledged report"
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged reports lost after kill -9"
    assert len(stored) <= attempts


def test_kill_9_loses_no_acknowledged_report_sqlite(tmp_path: Path, report_pki: PKI) -> None:
    db = str(tmp_path / "data" / "certpin.sqlite3")
    proc = CollectorProcess("--db", db, "--rate", "0")
    acked, attempts = _load_until_killed(proc, certpin_report(report_pki))
    store = Store(db)
    try:
        _check_after_restart(["--db", db], store, acked, attempts)
    finally:
        store.close()


def test_kill_9_loses_no_acknowledged_report_postgres(
    pg_url: str, pg_schema: str, report_pki: PKI
) -> None:
    args = ["--db", pg_url, "--db-schema", pg_schema]
    proc = CollectorProcess(*args, "--rate", "0")
    acked, attempts = _load_until_killed(proc, certpin_report(report_pki))
    store = Store(pg_url, schema=pg_schema)
    try:
        _check_after_restart(args, store, acked, attempts)
    finally:
        store.close()


def test_two_replicas_on_one_postgres(pg_url: str, pg_schema: str, report_pki: PKI) -> None:
    args = ["--db", pg_url, "--db-schema", pg_schema, "--rate", "0"]
    replicas = [CollectorProcess(*args), CollectorProcess(*args)]
    template = certpin_report(report_pki)
    ids = [uuid.uuid4().hex for _ in range(120)]
    # Every report goes to BOTH replicas, interleaved: each must be stored exactly once and
    # every second copy counted as a duplicate, whichever replica commits first.
    jobs = [(replica, rid) for rid in ids for replica in replicas]
    statuses: list[int] = []
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def send(job: tuple[CollectorProcess, str]) -> None:
        replica, rid = job
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=10)
            with lock:
                clients.append(local.client)
        response = local.client.post(replica.url + "/reports", content=_body(template, rid))
        with lock:
            statuses.append(response.status_code)

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(send, jobs))
    finally:
        for client in clients:
            client.close()
        for replica in replicas:
            replica.stop()
    assert sorted(set(statuses)) == [200, 201]
    assert statuses.count(201) == len(ids)
    store = Store(pg_url, schema=pg_schema)
    try:
        keys = store.report_keys()
        assert sorted(keys) == sorted(f"id:{rid}" for rid in ids)
        assert store.totals() == (len(ids), len(ids))
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_split_over_several_statements_keeps_every_outcome(
    backend: str, tmp_path: Path, report_pki: PKI, request: pytest.FixtureRequest
) -> None:
    # Small pages force several multi-row INSERTs in one transaction: each report still gets
    # its own id, the copy of a key in the same batch and a key stored before are duplicates,
    # and nothing is stored twice.
    if backend == "sqlite":
        store = Store(str(tmp_path / "split.sqlite3"))
    else:
        pg_url = request.getfixturevalue("pg_url")
        store = Store(pg_url, schema=request.getfixturevalue("pg_schema"))
    try:
        store.migrate()
        from certpin.collector.dialects import normalize_report
        from certpin.collector.limits import IngestLimits, parse_json

        template = certpin_report(report_pki)

        def report(rid: str) -> Any:
            limits = IngestLimits()
            return normalize_report(parse_json(_body(template, rid), limits), limits)

        (before,) = store.insert_batch([(report("r-0"), "a")])
        # Pages of two rows (SQLite's multi-row statements; Postgres sends the batch as one
        # JSON parameter whatever the page size).
        store.engine.update_execution_options(insertmanyvalues_page_size=2)
        batch = [(report(f"r-{i}"), "a") for i in (1, 2, 3, 0, 4, 2, 5)]
        outcomes = store.insert_batch(batch)
        new = [o.new for o in outcomes]
        assert new == [True, True, True, False, True, False, True]
        assert outcomes[3].id == before.id and outcomes[5].id == outcomes[1].id
        assert len({o.id for o in outcomes}) == 6
        assert store.totals() == (6, 2)
    finally:
        if backend == "sqlite":
            store.close()
        else:
            store.drop_schema()
            store.close()
