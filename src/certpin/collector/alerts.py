"""Alerting: know within minutes whether a pin failure is an attack or a botched rotation.

Two alerts, each written as a log line (logger ``certpin.collector.alerts``, WARNING) and, when
configured, POSTed as JSON to a webhook:

* ``new-pin``: a host reported an unexpected SPKI never seen before for that host. "Never seen"
  is decided in the database (``seen_pins``), so replicas sharing one Postgres alert once.
* ``failure-spike``: a host's reports in the last ``window`` seconds reached ``min_reports`` and
  at least ``factor`` times the previous window's count. Counted in the database (all replicas'
  reports), at most once per ``check_interval`` per host: the count reads every report of the
  window, and during an incident (when the collector is busiest) running it after every group
  commit would cost more than the ingest itself. Reports that arrive in between are counted by
  one trailing check at the end of the interval, so a spike is never missed, only seen up to
  ``check_interval`` later.

Every alert is de-duplicated through the ``alerts`` table (``dedup_key`` UNIQUE): once per
host and key, once per host and spike window. Webhook delivery is best effort (a bounded queue,
one attempt, ``timeout`` seconds); the log line is always written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from certpin._io import http
from certpin.collector.dialects import Report
from certpin.collector.store import Outcome, Store, now_us

__all__ = ["AlertConfig", "Alerter"]

log = logging.getLogger("certpin.collector.alerts")


@dataclass(frozen=True)
class AlertConfig:
    """Alert settings.

    Attributes:
        webhook_url: where to POST alerts (JSON); None = log lines only.
        window: spike window in seconds (default 300).
        min_reports: reports in one window below which no spike is reported (default 20).
        factor: how many times the previous window's count makes a spike (default 3.0).
        timeout: webhook timeout in seconds (default 5).
        check_interval: seconds between two spike checks of one host (default 1).
    """

    webhook_url: str | None = None
    window: int = 300
    min_reports: int = 20
    factor: float = 3.0
    timeout: float = 5.0
    check_interval: float = 1.0


class Alerter:
    """Evaluates committed batches and emits alerts; runs on the collector's event loop."""

    def __init__(self, store: Store, config: AlertConfig) -> None:
        self.store = store
        self.config = config
        self.sent: list[dict[str, Any]] = []  # the latest alerts, newest last (bounded)
        self._spiked: set[tuple[str, int]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_check: dict[str, float] = {}  # host -> loop time of its last spike check
        self._trailing: dict[str, asyncio.TimerHandle] = {}  # host -> its scheduled check
        self._as_of: dict[str, int] = {}  # host -> commit time (µs) a due check counts up to
        self._slots = asyncio.Semaphore(2)  # spike counts running at once (executor threads)
        self.spike_checks = 0  # spike checks run (tests, metrics)

    def committed(self, batch: Sequence[tuple[Report, Outcome]]) -> None:
        """Schedule alert checks for a committed batch (never delays the acknowledgements)."""
        if not any(outcome.new for _, outcome in batch):
            return
        task = asyncio.get_running_loop().create_task(self._guarded(self._check(list(batch))))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Run the trailing spike checks now and wait for every scheduled check and delivery
        (shutdown, tests)."""
        while self._tasks or self._trailing:
            for host, timer in list(self._trailing.items()):
                timer.cancel()
                self._run_spike_check(host)
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spike_check_soon(self, host: str) -> None:
        """Check `host` now, or once at the end of its interval if it was checked lately."""
        # The window a check counts ends at the latest commit that asked for it, not at the
        # time the (possibly trailing) check runs: reports must not slide out meanwhile.
        self._as_of[host] = now_us()
        if host in self._trailing:
            return  # a trailing check is already due; it will count these reports too
        loop = asyncio.get_running_loop()
        wait = self._last_check.get(host, -math.inf) + self.config.check_interval - loop.time()
        if wait <= 0:
            self._run_spike_check(host)
        else:
            self._trailing[host] = loop.call_later(wait, self._run_spike_check, host)

    def _run_spike_check(self, host: str) -> None:
        self._trailing.pop(host, None)
        loop = asyncio.get_running_loop()
        self._last_check[host] = loop.time()
        if len(self._last_check) > 10_000:  # bounded: many hosts only cost earlier re-checks
            self._last_check.clear()
        self.spike_checks += 1
        as_of = self._as_of.pop(host, None) or now_us()
        task = loop.create_task(self._guarded(self._check_spike(host, as_of)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, check: Any) -> None:
        try:
            await check
        except Exception:  # Defensive: alerting must never take the collector down.
            log.exception("certpin collector: alert evaluation failed")

    async def _check(self, batch: list[tuple[Report, Outcome]]) -> None:
        for report, outcome in batch:
            if outcome.new_pin and report.unexpected_pin is not None:
                await self._fire(
                    "new-pin",
                    report.hostname,
                    f"new-pin:{report.hostname}:{report.unexpected_pin}",
                    {
                        "pin": report.unexpected_pin,
                        "subject": report.unexpected_subject,
                        "issuer": report.unexpected_issuer,
                        "report_key": report.report_key,
                        "app": report.app_id,
                        "app_version": report.app_version,
                    },
                )
        for host in sorted({r.hostname for r, o in batch if o.new}):
            self._spike_check_soon(host)

    async def _check_spike(self, host: str, now: int) -> None:
        window_us = self.config.window * 1_000_000
        bucket = now // window_us
        if (host, bucket) in self._spiked:
            return
        async with self._slots:
            current = await asyncio.to_thread(self.store.count_since, host, now - window_us)
            if current < self.config.min_reports:
                return
            before = await asyncio.to_thread(self.store.count_since, host, now - 2 * window_us)
        previous = before - current
        if current < self.config.factor * previous:
            return
        self._spiked.add((host, bucket))
        if len(self._spiked) > 10_000:
            self._spiked.clear()
        await self._fire(
            "failure-spike",
            host,
            f"failure-spike:{host}:{bucket}",
            {"reports": current, "previous": previous, "window_seconds": self.config.window},
        )

    async def _fire(self, kind: str, host: str, dedup_key: str, detail: dict[str, Any]) -> None:
        if not await asyncio.to_thread(self.store.record_alert, dedup_key, kind, host, detail):
            return  # already alerted (by this or another replica)
        alert = {"kind": kind, "hostname": host, **detail}
        self.sent.append(alert)
        del self.sent[:-100]
        # %r: the host and subject are attacker-controlled; repr keeps log lines single-line.
        log.warning("certpin alert %s for host %r: %r", kind, host, detail)
        if self.config.webhook_url is not None:
            await asyncio.to_thread(self._post, alert)

    def _post(self, alert: dict[str, Any]) -> None:
        # The edges' one HTTP client: CA-verified https (the system store), no redirects (a
        # redirect could move the POST and its report details to another host), a capped answer.
        url = self.config.webhook_url
        assert url is not None
        context = ssl.create_default_context() if url.startswith("https:") else None
        try:
            response = http.request(
                url,
                context=context,
                method="POST",
                body=json.dumps(alert).encode("utf-8"),
                headers={"Content-Type": "application/json", "User-Agent": "certpin-collector"},
                timeout=self.config.timeout,
                max_body=1024,
            )
        except http.ERRORS as exc:  # best effort: the log line above is the record
            log.error("certpin alert webhook %s failed: %s", url, exc)
            return
        if not response.ok:
            log.error("certpin alert webhook %s: HTTP %s %s", url, response.status, response.reason)
