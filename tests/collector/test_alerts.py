"""Alerts: a webhook and a log line for a never-seen key and for a failure spike, once each."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.pki import PKI, make_pki
from certpin.collector.alerts import AlertConfig
from collector._helpers import CollectorServer, dumps, rfc7469_report


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
    thread.join(5)


def _wait(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_new_key_and_spike_alert_once_each(
    tmp_path: Path,
    report_pki: PKI,
    webhook: tuple[str, list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, received = webhook
    config = AlertConfig(webhook_url=url, window=600, min_reports=6, factor=3)
    caplog.set_level(logging.WARNING, logger="certpin.collector.alerts")
    with CollectorServer(str(tmp_path / "a.db"), rate_limit=None, alerts=config) as srv:
        with httpx.Client(base_url=srv.url) as client:
            for port in range(1, 5):  # same unexpected key, four reports: one new-key alert
                body = {**rfc7469_report(report_pki), "port": port}
                assert client.post("/reports", content=dumps(body)).status_code == 201
            _wait(lambda: len(received) >= 1)
            time.sleep(0.2)
            assert [a["kind"] for a in received] == ["new-pin"]
            other = make_pki(("reports.example.test",))  # same host, another key
            assert client.post("/reports", content=dumps(rfc7469_report(other))).status_code == 201
            _wait(lambda: len(received) >= 2)
            for port in range(10, 15):  # now 10 reports in the window: one spike alert
                body = {**rfc7469_report(report_pki), "port": port}
                assert client.post("/reports", content=dumps(body)).status_code == 201
            _wait(lambda: len(received) >= 3)
            time.sleep(0.3)
    kinds = [a["kind"] for a in received]
    assert kinds == ["new-pin", "new-pin", "failure-spike"]
    assert received[0]["hostname"] == "reports.example.test"
    assert received[0]["pin"] != received[1]["pin"]
    assert received[2]["reports"] >= 6
    lines = [r.getMessage() for r in caplog.records if r.name == "certpin.collector.alerts"]
    assert len(lines) == 3 and all("certpin alert" in line for line in lines)


def test_no_alert_below_the_spike_threshold_or_for_matching_keys(
    tmp_path: Path, report_pki: PKI, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    config = AlertConfig(webhook_url=url, window=600, min_reports=50)
    with CollectorServer(str(tmp_path / "b.db"), rate_limit=None, alerts=config) as srv:
        with httpx.Client(base_url=srv.url) as client:
            from certpin import Pin

            body = rfc7469_report(report_pki)
            body["known-pins"] = [
                f'pin-sha256="{Pin.for_certificate(report_pki.leaf.der()).base64}"'
            ]
            for port in range(1, 6):
                assert client.post("/reports", content=dumps({**body, "port": port})).is_success
            time.sleep(0.3)
            assert srv.collector.alerter.sent == []
    assert received == []


@pytest.mark.parametrize("drain", [False, True])
def test_spike_checks_are_throttled_per_host_and_a_trailing_check_catches_up(
    tmp_path: Path, report_pki: PKI, drain: bool
) -> None:
    # A dozen group commits within one check interval: one spike check right away (1 report,
    # below min_reports), then exactly one trailing check, which sees all 12 and alerts; it
    # runs when the interval ends, or at once on drain (shutdown).
    from certpin.collector.alerts import Alerter
    from certpin.collector.dialects import normalize_report
    from certpin.collector.limits import IngestLimits, parse_json
    from certpin.collector.store import Store

    store = Store(str(tmp_path / "spike.sqlite3"))
    store.migrate()
    config = AlertConfig(window=600, min_reports=5, factor=3, check_interval=2.0)
    alerter = Alerter(store, config)
    limits = IngestLimits()

    async def run() -> tuple[int, int, list[str]]:
        for port in range(1, 13):
            body = dumps({**rfc7469_report(report_pki), "port": port})
            report = normalize_report(parse_json(body, limits), limits)
            (outcome,) = store.insert_batch([(report, "127.0.0.1")])
            alerter.committed([(report, outcome)])
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        during = alerter.spike_checks
        if drain:
            await alerter.drain()
        else:  # the trailing check fires by itself when the interval ends
            deadline = asyncio.get_running_loop().time() + 10
            while alerter.spike_checks < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.gather(*list(alerter._tasks))
        return during, alerter.spike_checks, [a["kind"] for a in alerter.sent]

    try:
        during, total, kinds = asyncio.run(run())
    finally:
        store.close()
    assert during == 1
    assert total == 2
    assert kinds == ["new-pin", "failure-spike"]


def test_the_webhook_does_not_follow_a_redirect(
    tmp_path: Path, report_pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    # A redirect could move the alert, and the report details in it, to another host: the
    # collector posts once to the configured URL and logs the answer (the twin: the direct
    # URL of the tests above receives its alerts).
    hits: list[str] = []
    elsewhere: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            elsewhere.append("GET")
            self.send_response(204)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)]
    target = f"http://127.0.0.1:{servers[0].server_address[1]}/stolen"

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    servers.append(ThreadingHTTPServer(("127.0.0.1", 0), Redirect))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        url = f"http://127.0.0.1:{servers[1].server_address[1]}/hook"
        config = AlertConfig(webhook_url=url, window=600, min_reports=50)
        caplog.set_level(logging.ERROR, logger="certpin.collector.alerts")
        with CollectorServer(str(tmp_path / "r.db"), rate_limit=None, alerts=config) as srv:
            with httpx.Client(base_url=srv.url) as client:
                body = rfc7469_report(report_pki)
                assert client.post("/reports", content=dumps(body)).status_code == 201
                _wait(lambda: any("webhook" in r.getMessage() for r in caplog.records))
                time.sleep(0.2)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(5)
    assert hits == ["/hook"]
    assert elsewhere == []
    assert any("HTTP 302" in r.getMessage() for r in caplog.records)
