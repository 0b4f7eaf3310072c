"""The writer process (the default): held by a real database lock, killed, interrupted, left by
its parent, stopped with reports in flight. The thread writer's own cases are in test_ingest."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.pki import PKI
from certpin.collector._writer import ProcessWriter, _pack, _unpack
from certpin.collector.alerts import AlertConfig, Alerter
from certpin.collector.dialects import normalize_report
from certpin.collector.limits import IngestLimits
from certpin.collector.store import Store
from collector._helpers import (
    CollectorProcess,
    CollectorServer,
    certpin_report,
    rfc7469_report,
    trustkit_android_report,
    trustkit_ios_report,
)


def _post(srv: CollectorServer, body: dict[str, Any]) -> httpx.Response:
    with srv.client() as client:
        return client.post("/reports", json=body)


def _wait(predicate: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _total(srv: CollectorServer) -> dict[str, int]:
    with srv.client() as client:
        total: dict[str, int] = client.get("/api/summary", headers=srv.auth).json()["total"]
        return total


@pytest.mark.parametrize(
    "make", [rfc7469_report, certpin_report, trustkit_ios_report, trustkit_android_report]
)
def test_a_report_crosses_to_the_writer_unchanged(make: Any, report_pki: PKI) -> None:
    report = normalize_report(make(report_pki), IngestLimits())
    assert _unpack(pickle.loads(pickle.dumps(_pack(report)))) == report
    timed = normalize_report(
        {**make(report_pki), "date-time": "2025-06-07T08:09:10.123456+02:00"}, IngestLimits()
    )
    # Exact values only: a float time once crossed here, and year 10000 killed the child.
    assert not any(isinstance(value, float) for value in _pack(timed))
    if timed.client_time_us is not None:  # Android's date-time is device local time: dropped
        back = _unpack(pickle.loads(pickle.dumps(_pack(timed))))
        assert back.client_time_us == timed.client_time_us == 1749276550123456 and back == timed


def test_the_writer_is_a_process_or_a_thread(tmp_path: Path) -> None:
    from certpin.collector._writer import ThreadWriter
    from certpin.collector.app import Collector

    db = str(tmp_path / "kind.sqlite3")
    assert isinstance(Collector(db, "t").writer, ProcessWriter)
    assert isinstance(Collector(db, "t", writer="thread").writer, ThreadWriter)
    with pytest.raises(ValueError, match="writer must be 'process' or 'thread', not 'fork'"):
        Collector(db, "t", writer="fork")


def test_a_full_queue_is_a_503_while_the_database_is_locked(
    tmp_path: Path, report_pki: PKI
) -> None:
    db = tmp_path / "locked.sqlite3"
    with CollectorServer(str(db), rate_limit=None, max_queue=1) as srv:
        writer = srv.collector.writer
        assert isinstance(writer, ProcessWriter)
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the writer's BEGIN IMMEDIATE now waits (busy timeout)
        try:
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(_post, srv, certpin_report(report_pki))
                _wait(lambda: len(writer._waiting) == 1, "the report to reach the writer")
                refused = _post(srv, certpin_report(report_pki))
                lock.execute("ROLLBACK")
                assert held.result(20).status_code == 201
        finally:
            lock.close()
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "collector overloaded; retry later"
        assert _total(srv) == {"reports": 1, "duplicates": 0}


def test_a_killed_writer_fails_its_reports_and_is_replaced(tmp_path: Path, report_pki: PKI) -> None:
    db = tmp_path / "killed.sqlite3"
    with CollectorServer(str(db), rate_limit=None) as srv:
        writer = srv.collector.writer
        assert isinstance(writer, ProcessWriter) and writer.process is not None
        assert _post(srv, certpin_report(report_pki)).status_code == 201
        first = writer.process
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            with ThreadPoolExecutor(1) as pool:
                in_flight = pool.submit(_post, srv, certpin_report(report_pki))
                _wait(lambda: len(writer._waiting) == 1, "the report to reach the writer")
                os.kill(first.pid, signal.SIGKILL)
                lost = in_flight.result(20)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # Not stored (the commit never happened) and not acknowledged: a 503 the client retries.
        assert (
            lost.status_code == 503 and lost.json()["error"] == "storage unavailable; retry later"
        )
        _wait(lambda: writer.process is not first and writer._link is not None, "a new writer")
        assert writer.restarts == 1 and first.exitcode == -signal.SIGKILL
        retried = _post(srv, certpin_report(report_pki))
        assert retried.status_code == 201
        assert _total(srv) == {"reports": 2, "duplicates": 0}


def test_ctrl_c_reaches_the_server_not_the_writer(tmp_path: Path, report_pki: PKI) -> None:
    with CollectorServer(str(tmp_path / "int.sqlite3"), rate_limit=None) as srv:
        writer = srv.collector.writer
        assert isinstance(writer, ProcessWriter) and writer.process is not None
        assert os.getpgid(writer.process.pid) != os.getpgid(0)  # a terminal's Ctrl-C: not sent
        assert _post(srv, certpin_report(report_pki)).status_code == 201  # the writer is up
        os.kill(writer.process.pid, signal.SIGINT)  # a service manager's signals: ignored
        os.kill(writer.process.pid, signal.SIGTERM)
        assert _post(srv, certpin_report(report_pki)).status_code == 201
        assert writer.process.exitcode is None and writer.restarts == 0


def test_stop_commits_every_report_sent(tmp_path: Path, report_pki: PKI) -> None:
    """Shutdown with reports in flight: each one is committed and answered, none refused."""
    store = Store(str(tmp_path / "stop.sqlite3"))
    store.migrate()
    writer = ProcessWriter(store, Alerter(store, AlertConfig()), max_batch=8, max_queue=1000)
    reports = [normalize_report(certpin_report(report_pki), IngestLimits()) for _ in range(60)]

    async def run() -> list[Any]:
        await writer.start()
        tasks = [asyncio.create_task(writer.submit(r, "127.0.0.1")) for r in reports]
        await asyncio.sleep(0)  # every submit has written its report to the writer
        await writer.stop()
        return await asyncio.gather(*tasks)

    try:
        outcomes = asyncio.run(run())
        assert all(o.new for o in outcomes) and len({o.id for o in outcomes}) == 60
        assert store.totals()[0] == 60
        assert writer.process is not None and writer.process.exitcode == 0
        assert writer.batches >= 60 // 8  # max_batch holds
    finally:
        store.close()


def test_an_interpreter_that_exits_without_stop_ends_its_writer(tmp_path: Path) -> None:
    # multiprocessing joins a process's children when it exits: without the end message the
    # writer would wait for more reports, and the exit for the writer, forever.
    code = textwrap.dedent(
        f"""
        import asyncio
        from certpin.collector._writer import ProcessWriter
        from certpin.collector.alerts import AlertConfig, Alerter
        from certpin.collector.store import Store

        store = Store({str(tmp_path / "exit.sqlite3")!r})
        store.migrate()
        writer = ProcessWriter(store, Alerter(store, AlertConfig()), 8, 100)

        async def run():
            await writer.start()
            print(writer.process.pid, flush=True)

        asyncio.run(run())  # and no writer.stop()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    child = int(done.stdout)
    _wait(lambda: not Path(f"/proc/{child}").exists(), "the writer to end", 10)


def _children(pid: int) -> list[int]:
    """The child processes of `pid`, whichever of its threads started them."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(p) for task in tasks for p in (task / "children").read_text().split()]


def test_the_writer_ends_with_a_killed_parent(tmp_path: Path, report_pki: PKI) -> None:
    proc = CollectorProcess("--db", str(tmp_path / "orphan.sqlite3"))
    try:
        # The writer, and multiprocessing's resource tracker (it ends with the last process
        # holding its pipe: the server and the writer).
        children = _children(proc.proc.pid)
        assert 1 <= len(children) <= 2
        response = httpx.post(proc.url + "/reports", json=certpin_report(report_pki), timeout=10)
        assert response.status_code == 201
    finally:
        proc.kill()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie until init reaps it: ended all the same.
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")

    _wait(lambda: all(gone(pid) for pid in children), "the orphaned writer to end", 10)


def _locked_writer(tmp_path: Path, name: str) -> tuple[Store, ProcessWriter, sqlite3.Connection]:
    db = tmp_path / name
    store = Store(str(db))
    store.migrate()
    writer = ProcessWriter(store, Alerter(store, AlertConfig()), max_batch=8, max_queue=1000)
    return store, writer, sqlite3.connect(db, isolation_level=None)


@pytest.mark.parametrize("bounded", [True, False])
def test_a_full_pipe_keeps_reports_in_the_outbox_and_never_blocks_the_loop(
    tmp_path: Path, report_pki: PKI, bounded: bool
) -> None:
    """The event loop sends to the child itself: with the child held by a real SQLite lock,
    what the pipe may not hold waits in the outbox (the loop keeps running), and goes once
    the child answers. Twin: with room for everything, everything is sent at once."""
    store, writer, lock = _locked_writer(tmp_path, "full.sqlite3")
    reports = [normalize_report(certpin_report(report_pki), IngestLimits()) for _ in range(40)]

    async def run() -> tuple[float, int, list[Any]]:
        await writer.start()
        assert writer._link is not None
        if bounded:
            writer._link.capacity = 1  # a message only when nothing is unanswered
        lock.execute("BEGIN IMMEDIATE")  # the child's first commit waits (busy timeout)
        tasks = [asyncio.create_task(writer.submit(r, "127.0.0.1")) for r in reports]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(0.3)
        late = loop.time() - started - 0.3
        held = len(writer._outbox)
        lock.execute("ROLLBACK")
        outcomes = await asyncio.gather(*tasks)
        await writer.stop()
        return late, held, outcomes

    try:
        late, held, outcomes = asyncio.run(run())
        assert late < 0.2  # the loop was never stuck in a send
        # One turn submitted all 40: the first message (max_batch 8) went, the rest waited.
        assert held == (32 if bounded else 0)
        assert all(o.new for o in outcomes) and store.totals() == (40, 0)
    finally:
        lock.close()
        store.close()
