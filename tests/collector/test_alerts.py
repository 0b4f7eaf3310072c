"""Alerts: a webhook and a log line for a never-seen key and for a failure spike, once each."""

from __future__ import annotations

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
