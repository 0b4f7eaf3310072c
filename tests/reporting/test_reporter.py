"""The reporter against real loopback servers: a MITM'd TLS server and a real collector."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import certpin
from _support.pki import PKI, PKIFiles
from _support.servers import TLSServer
from certpin import PinFailure, Policy
from certpin.reporting import Reporter, reporting_hook
from certpin.reporting.reporter import build_report
from collector._helpers import CollectorServer


def _pins(pki: PKI) -> list[str]:
    return [str(certpin.Pin.for_certificate(c)) for c in (pki.leaf.der(), pki.intermediate.der())]


def _policy(pki: PKI, report_uri: str, collector_pins: list[str] | None = None) -> Policy:
    domains: dict[str, Any] = {"localhost": {"pins": _pins(pki), "report_uris": [report_uri]}}
    if collector_pins is not None:
        domains["127.0.0.1"] = {"pins": collector_pins}
    return Policy.from_dict({"domains": domains})


def _trust(pki: PKI, rogue: PKI) -> str:
    return (pki.root.pem() + rogue.root.pem()).decode()


def _handshake(ctx: ssl.SSLContext, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost"):
            pass


def _failure(pki: PKI, rogue: PKI, policy: Policy, port: int = 443) -> PinFailure:
    chain = rogue.leaf.chain_der(include_root=True)
    now = dt.datetime.now(dt.UTC)
    result = certpin.verdict("localhost", chain, policy, now)
    assert result.pin_failure
    return PinFailure(result, "localhost", port, tuple(chain[:2]), tuple(chain), "localhost", now)


@pytest.fixture
def collector(tmp_path: Path, tmp_pki_files: PKIFiles) -> Iterator[CollectorServer]:
    with CollectorServer(
        str(tmp_path / "collector.db"),
        certfile=tmp_pki_files.certfile,
        keyfile=tmp_pki_files.keyfile,
        rate_limit=None,
    ) as srv:
        yield srv


def _stored(collector: CollectorServer) -> list[dict[str, Any]]:
    response = httpx.get(
        collector.url + "/api/reports", headers=collector.auth, verify=False, timeout=10
    )
    rows: list[dict[str, Any]] = response.json()["reports"]
    return rows


# -- end to end ---------------------------------------------------------------------------------


def test_mitm_failure_report_reaches_the_collector_pinned(
    pki: PKI, rogue_pki: PKI, rogue_server: TLSServer, collector: CollectorServer
) -> None:
    policy = _policy(pki, collector.url + "/reports", collector_pins=_pins(pki))
    reporter = reporting_hook(policy, cadata=_trust(pki, rogue_pki))
    ctx = certpin.create_default_context(policy, cadata=_trust(pki, rogue_pki), on_failure=reporter)
    with pytest.raises(certpin.PinValidationError):
        _handshake(ctx, rogue_server.port)
    assert reporter.flush(10)
    reporter.close()
    assert reporter.stats.sent == 1 and reporter.stats.failed == 0
    rows = _stored(collector)
    assert len(rows) == 1
    row = rows[0]
    assert (row["dialect"], row["hostname"], row["port"]) == (
        "certpin",
        "localhost",
        rogue_server.port,
    )
    assert row["unexpected_pin"] == str(certpin.Pin.for_certificate(rogue_pki.leaf.der()))
    assert row["enforce"] is True and row["verdict_status"] == "failed"
    assert sorted(row["known_pins"]) == sorted(_pins(pki))
    assert "Rogue" in row["unexpected_issuer"]


def test_upload_to_a_pinned_collector_with_wrong_pins_is_refused_and_spooled(
    pki: PKI, rogue_pki: PKI, collector: CollectorServer, tmp_path: Path
) -> None:
    wrong = _pins(rogue_pki)  # the collector's real key is not among these
    policy = _policy(pki, collector.url + "/reports", collector_pins=wrong)
    spool = tmp_path / "spool"
    reporter = Reporter(policy, cadata=_trust(pki, rogue_pki), spool_dir=spool)
    reporter(_failure(pki, rogue_pki, policy))
    assert reporter.flush(10)
    reporter.close()
    assert (reporter.stats.sent, reporter.stats.failed, reporter.stats.spooled) == (0, 1, 1)
    assert _stored(collector) == []
    assert len(list(spool.glob("*.json"))) == 1

    # Twin: with the collector's right pins, the spooled report goes out at the next start.
    fixed = _policy(pki, collector.url + "/reports", collector_pins=_pins(pki))
    again = Reporter(fixed, cadata=_trust(pki, rogue_pki), spool_dir=spool)
    again.start()
    assert again.flush(10)
    deadline = time.monotonic() + 10
    while not _stored(collector) and time.monotonic() < deadline:
        time.sleep(0.05)
    again.close()
    assert len(_stored(collector)) == 1
    assert list(spool.glob("*.json")) == []


def test_report_to_the_failing_host_is_spooled_never_sent(
    pki: PKI, rogue_pki: PKI, rogue_server: TLSServer, tmp_path: Path
) -> None:
    # The report URI points at the very host whose pins just failed (the MITM).
    policy = _policy(pki, f"https://localhost:{rogue_server.port}/reports")
    spool = tmp_path / "spool"
    reporter = Reporter(policy, cadata=_trust(pki, rogue_pki), spool_dir=spool)
    ctx = certpin.create_default_context(policy, cadata=_trust(pki, rogue_pki), on_failure=reporter)
    with pytest.raises(certpin.PinValidationError):
        _handshake(ctx, rogue_server.port)
    assert reporter.flush(10)
    reporter.close()
    assert rogue_server.wait_idle()
    assert (reporter.stats.looped, reporter.stats.spooled, reporter.stats.sent) == (1, 1, 0)
    assert b"POST" not in rogue_server.total_received()
    saved = json.loads(next(spool.glob("*.json")).read_text())
    assert saved["report"]["hostname"] == "localhost"


def test_report_building_follows_rfc7469(pki: PKI, rogue_pki: PKI) -> None:
    policy = _policy(pki, "https://collector.example/reports")
    report = build_report(_failure(pki, rogue_pki, policy, port=8443), app="com.x", app_version="1")
    assert {
        "date-time",
        "hostname",
        "port",
        "effective-expiration-date",
        "include-subdomains",
        "noted-hostname",
        "served-certificate-chain",
        "validated-certificate-chain",
        "known-pins",
    } <= set(report)
    assert report["port"] == 8443 and report["date-time"].endswith("Z")
    assert all(p.startswith('pin-sha256="') for p in report["known-pins"])
    assert len(report["validated-certificate-chain"]) == 3
    assert report["validated-certificate-chain"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert (report["mode"], report["verdict-status"]) == ("enforce", "failed")
    assert report["app-bundle-id"] == "com.x"
    unknown_port = build_report(_failure(pki, rogue_pki, policy, port=0))
    assert unknown_port["port"] == 0


# -- never blocks, bounded, de-duplicated -------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP server that accepts and never answers: an upload to it hangs until its timeout."""
    server = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in conns:
        conn.close()
    server.close()


def test_hook_never_blocks_and_the_queue_drops_the_oldest(
    pki: PKI, rogue_pki: PKI, black_hole: int
) -> None:
    policy = _policy(pki, f"http://127.0.0.1:{black_hole}/reports")
    reporter = Reporter(policy, allow_http=True, max_queue=3, timeout=2)
    failures = [_failure(pki, rogue_pki, policy, port=1000 + i) for i in range(50)]
    start = time.perf_counter()
    for failure in failures:
        reporter(failure)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.05  # 50 calls while the upload hangs: the hook did no I/O
    stats = reporter.stats
    assert stats.queued == 50
    assert stats.dropped >= 46  # one in flight at most, three queued
    reporter.close(timeout=0.1)


def test_identical_failures_are_reported_once_per_window(
    pki: PKI, rogue_pki: PKI, collector: CollectorServer
) -> None:
    now = [dt.datetime.now(dt.UTC)]
    policy = _policy(pki, collector.url + "/reports", collector_pins=_pins(pki))
    reporter = Reporter(policy, cadata=_trust(pki, rogue_pki), clock=lambda: now[0])
    reporter(_failure(pki, rogue_pki, policy))
    reporter(_failure(pki, rogue_pki, policy))  # same host, port, chain, pins
    reporter(_failure(pki, rogue_pki, policy, port=444))  # another port: reported
    assert reporter.flush(10)
    assert (reporter.stats.sent, reporter.stats.deduplicated) == (2, 1)
    now[0] += dt.timedelta(hours=24, seconds=1)  # window over: reported again
    reporter(_failure(pki, rogue_pki, policy))
    assert reporter.flush(10)
    reporter.close()
    assert (reporter.stats.sent, reporter.stats.deduplicated) == (3, 1)
    assert len(_stored(collector)) == 3


def test_plain_http_report_uri_is_refused_by_default(pki: PKI, rogue_pki: PKI) -> None:
    policy = _policy(pki, "http://127.0.0.1:9/reports")
    reporter = Reporter(policy)
    reporter(_failure(pki, rogue_pki, policy))
    assert reporter.flush(10)
    reporter.close()
    assert (reporter.stats.rejected, reporter.stats.sent) == (1, 0)


def test_no_report_uri_means_nothing_is_sent(pki: PKI, rogue_pki: PKI) -> None:
    policy = Policy.from_dict({"domains": {"localhost": {"pins": _pins(pki)}}})
    reporter = Reporter(policy)
    reporter(_failure(pki, rogue_pki, policy))
    assert reporter.flush(10)
    reporter.close()
    assert reporter.stats.no_destination == 1


# -- spool and exit -----------------------------------------------------------------------------


def test_exit_is_bounded_and_the_report_in_flight_survives(
    pki: PKI, rogue_pki: PKI, black_hole: int, tmp_path: Path
) -> None:
    """A process exits within the flush bound while its upload hangs; the report is on disk."""
    spool = tmp_path / "spool"
    policy = _policy(pki, f"http://127.0.0.1:{black_hole}/reports")
    failure = _failure(pki, rogue_pki, policy)
    (tmp_path / "chain.json").write_text(
        json.dumps([c.hex() for c in failure.verified_chain] + [json.dumps(policy.to_dict())])
    )
    script = textwrap.dedent(
        f"""
        import datetime as dt, json
        import certpin
        from certpin import PinFailure, Policy
        from certpin.reporting import Reporter
        *chain, doc = json.load(open({str(tmp_path / "chain.json")!r}))
        chain = [bytes.fromhex(c) for c in chain]
        policy = Policy.from_dict(json.loads(doc))
        now = dt.datetime.now(dt.UTC)
        result = certpin.verdict("localhost", chain, policy, now)
        reporter = Reporter(policy, allow_http=True, spool_dir={str(spool)!r}, timeout=30,
                            flush_timeout=1.0)
        reporter(PinFailure(result, "localhost", 443, tuple(chain), tuple(chain), "localhost",
                            now))
        """
    )
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=20)
    assert time.monotonic() - start < 8  # would be 30 s if exit waited for the upload
    files = list(spool.glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["report"]["hostname"] == "localhost"


def test_unreadable_spool_files_are_removed(pki: PKI, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "0001-torn.json").write_text("{not json")
    reporter = Reporter(_policy(pki, "https://127.0.0.1:9/r"), spool_dir=spool)
    reporter.start()
    assert reporter.flush(5)
    deadline = time.monotonic() + 5
    while list(spool.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    reporter.close()
    assert list(spool.glob("*.json")) == []
