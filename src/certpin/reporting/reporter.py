"""The reporter: RFC 7469 §3 pin-failure reports, sent off the handshake path.

Use it as the ``on_failure`` hook of a pinning context::

    reporter = certpin.reporting.Reporter(policy, spool_dir="~/.cache/myapp/pin-reports")
    ctx = certpin.create_default_context(policy, on_failure=reporter)

Guarantees:

* **Never blocks the handshake.** ``reporter(failure)`` appends to a bounded in-memory queue and
  returns; a daemon thread builds and uploads reports. When the queue is full the oldest
  failure is dropped and counted (``stats.dropped``).
* **De-duplicated** for ``dedup_window`` (24 h, as TrustKit): the same host, port, chains and
  pins are reported once per window.
* **Uploads are pinned** (RFC 7469 §2.1.4): every upload goes through
  ``certpin.create_default_context`` with the *same* policy, so a pinned report host is
  pin-validated and an unpinned one CA-validated. ``http://`` report URIs are refused unless
  ``allow_http=True``.
* **No report loops.** When the report host is the failing host (or falls under the failing
  rule), the report is spooled, never sent over the connection that just failed; spooled
  reports are retried later through the pinned context, and go out once the host passes again.
* **Optional spool** (``spool_dir``): reports that could not be delivered are written there
  atomically (temp file, fsync, rename) and retried every ``retry_interval`` seconds and at the
  next start. At interpreter exit the queue is flushed for at most ``flush_timeout`` seconds
  (2 s); what is left is spooled.

An HTTP answer 2xx counts as delivered; any other 4xx except 429 as rejected (dropped, logged:
the collector will never accept it); 429, 5xx and network or TLS errors as failed (spooled).
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import json
import logging
import os
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from certpin._io import http
from certpin._io.atomic import atomic_write
from certpin._version import __version__
from certpin.core.hosts import HostError, normalize_host
from certpin.core.pins import Pin, PinKind
from certpin.core.policy import Policy, PolicyProvider, as_provider
from certpin.core.times import iso
from certpin.core.verdict import VerdictStatus
from certpin.tls.context import PinFailure, create_default_context

__all__ = ["Reporter", "ReporterStats", "build_report", "reporting_hook"]

log = logging.getLogger("certpin.report")

_MAX_RESPONSE = 64 * 1024


@dataclass(frozen=True)
class ReporterStats:
    """Counters since the reporter was created.

    Attributes:
        queued: failures handed to the reporter.
        dropped: failures dropped because the queue was full (oldest first).
        deduplicated: reports not sent because an identical one was sent within the window.
        sent: successful uploads (one per report URI).
        rejected: uploads answered with a 4xx other than 429 (not retried).
        failed: uploads that failed (network, TLS, pin, 5xx, 429).
        spooled: reports written to the spool (failed uploads, loops, left at exit).
        looped: reports held back because the report host is the failing host.
        no_destination: failures whose rule has no report URI (and no default was given).
    """

    queued: int = 0
    dropped: int = 0
    deduplicated: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    spooled: int = 0
    looped: int = 0
    no_destination: int = 0


def _pem(der: bytes) -> str:
    return ssl.DER_cert_to_PEM_cert(der)


def _pin_text(pin: Pin) -> str:
    # RFC 7469 §2.1.1 names SPKI SHA-256 pins pin-sha256="…"; other kinds keep certpin's form.
    if pin.kind is PinKind.SPKI and pin.algorithm == "sha256":
        return f'pin-sha256="{pin.base64}"'
    return str(pin)


def _iso(when: dt.datetime) -> str:
    # A clock given without a zone reads UTC (``iso`` would take it as local time).
    return iso(when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC))


def build_report(
    failure: PinFailure, *, app: str | None = None, app_version: str | None = None
) -> dict[str, Any]:
    """The RFC 7469 §3 report for `failure`, plus certpin's fields.

    ``port`` is 0 when the transport does not expose it (asyncio), as TrustKit Android does.
    ``validation-result`` is TrustKit's: 1 a pin failure, 2 a CA failure (the chain failed CA
    or host-name validation on a pinned host; ``validated-certificate-chain`` is then empty).
    ``effective-expiration-date`` is null when the rule never expires.
    """
    result = failure.verdict
    rule = result.rule
    report: dict[str, Any] = {
        "date-time": _iso(failure.time),
        "hostname": failure.host,
        "port": failure.port or 0,
        "effective-expiration-date": (
            None if rule is None or rule.expires is None else _iso(rule.expires)
        ),
        "include-subdomains": bool(rule and rule.include_subdomains),
        "noted-hostname": failure.noted_hostname or failure.host,
        "served-certificate-chain": [_pem(d) for d in failure.served_chain],
        "validated-certificate-chain": [_pem(d) for d in failure.verified_chain],
        "known-pins": [_pin_text(p) for p in result.expected_pins],
        "certpin-version": __version__,
        "mode": "report-only" if result.report_only else "enforce",
        "verdict-status": str(result.status.value),
        # TrustKit's TSKTrustEvaluationResult: 1 no pin matched, 2 the chain is not trusted.
        "validation-result": 2 if result.status is VerdictStatus.UNTRUSTED else 1,
        "verdict-reason": result.reason,
        "report-id": uuid.uuid4().hex,
    }
    if app is not None:
        report["app-bundle-id"] = app
    if app_version is not None:
        report["app-version"] = app_version
    return report


class Reporter:
    """An ``on_failure`` hook that reports pin failures (see the module docstring).

    Args:
        policy: the policy (or provider) of the pinning context; uploads are pinned with it.
        report_uris: where to send when the failing rule has no ``report_uris`` of its own.
        cafile, capath, cadata: trust anchors for uploads (default: the system store).
        spool_dir: directory for undeliverable reports; None = no spool (they are dropped).
        max_queue: in-memory queue bound (default 100).
        dedup_window: identical reports are sent once per window (default 24 h).
        timeout: seconds per upload (default 5).
        flush_timeout: bound on the flush at interpreter exit (default 2 s).
        retry_interval: seconds between spool retries (default 60).
        max_spool: spool files kept (oldest deleted first; default 1000).
        allow_http: allow ``http://`` report URIs (unencrypted; default False).
        app, app_version: sent as ``app-bundle-id`` / ``app-version``.
        clock: current UTC time, for tests.
    """

    def __init__(
        self,
        policy: Policy | PolicyProvider | Callable[[], Policy],
        *,
        report_uris: Sequence[str] = (),
        cafile: str | os.PathLike[str] | None = None,
        capath: str | os.PathLike[str] | None = None,
        cadata: str | bytes | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        max_queue: int = 100,
        dedup_window: dt.timedelta = dt.timedelta(hours=24),
        timeout: float = 5.0,
        flush_timeout: float = 2.0,
        retry_interval: float = 60.0,
        max_spool: int = 1000,
        allow_http: bool = False,
        app: str | None = None,
        app_version: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._policy = as_provider(policy)
        self._trust = (cafile, capath, cadata)
        self.report_uris = tuple(report_uris)
        self.spool_dir = None if spool_dir is None else Path(spool_dir).expanduser()
        self.max_queue = max_queue
        self.dedup_window = dedup_window
        self.timeout = timeout
        self.flush_timeout = flush_timeout
        self.retry_interval = retry_interval
        self.max_spool = max_spool
        self.allow_http = allow_http
        self.app = app
        self.app_version = app_version
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._cond = threading.Condition()
        self._queue: deque[PinFailure] = deque()
        self._busy = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stats = ReporterStats()
        self._seen: OrderedDict[str, dt.datetime] = OrderedDict()
        self._ctx: ssl.SSLContext | None = None
        self._next_retry = 0.0  # monotonic; 0 = retry the spool as soon as the worker starts

    # -- the hook (handshake path: O(1), no I/O) -------------------------------------------------

    def __call__(self, failure: PinFailure) -> None:
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self._count(dropped=1)
            self._queue.append(failure)
            self._count(queued=1)
            self._cond.notify_all()
            if self._thread is None:
                self._start()

    @property
    def stats(self) -> ReporterStats:
        with self._cond:
            return self._stats

    def start(self) -> None:
        """Start the worker now (it starts by itself on the first failure); retries the spool."""
        with self._cond:
            if self._thread is None and not self._closing:
                self._start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued failure has been handled; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush for at most `timeout` (default ``flush_timeout``), spool the rest, stop."""
        timeout = self.flush_timeout if timeout is None else timeout
        self.flush(timeout)
        with self._cond:
            self._closing = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        for failure in left:  # not handled in time: keep them for the next start
            report = build_report(failure, app=self.app, app_version=self.app_version)
            for uri in self._uris(failure):
                self._spool(uri, report)
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, min(timeout, 0.5)))
        atexit.unregister(self.close)

    # -- worker ---------------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="certpin-reporter", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _count(self, **deltas: int) -> None:
        current = self._stats
        self._stats = replace(
            current, **{name: getattr(current, name) + n for name, n in deltas.items()}
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    wait = self._next_retry - time.monotonic()
                    if wait <= 0 and self.spool_dir is not None:
                        break
                    self._cond.wait(None if self.spool_dir is None else wait)
                if self._closing and not self._queue:
                    return
                failure = self._queue.popleft() if self._queue else None
                self._busy = True
            try:
                if failure is not None:
                    self._handle(failure)
                if self.spool_dir is not None and time.monotonic() >= self._next_retry:
                    self._next_retry = time.monotonic() + self.retry_interval
                    self._retry_spool()
            except Exception:  # Defensive: the worker must survive anything
                log.exception("certpin reporter: unexpected error")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _uris(self, failure: PinFailure) -> tuple[str, ...]:
        rule = failure.verdict.rule
        return (rule.report_uris if rule is not None else ()) or self.report_uris

    def _dedup_key(self, failure: PinFailure) -> str:
        digest = hashlib.sha256()
        pins = sorted(str(p) for p in failure.verdict.expected_pins)
        for part in (failure.host, str(failure.port), *pins):
            digest.update(part.encode("utf-8") + b"\0")
        for label, chain in ((b"V", failure.verified_chain), (b"S", failure.served_chain)):
            for der in chain:
                digest.update(label + hashlib.sha256(der).digest())
        return digest.hexdigest()

    def _duplicate(self, failure: PinFailure) -> bool:
        now = self._clock()
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now and len(self._seen) < 10_000:
                break
            del self._seen[key]
        key = self._dedup_key(failure)
        if key in self._seen:
            return True
        self._seen[key] = now + self.dedup_window
        return False

    def _handle(self, failure: PinFailure) -> None:
        uris = self._uris(failure)
        if not uris:
            with self._cond:
                self._count(no_destination=1)
            return
        if self._duplicate(failure):
            with self._cond:
                self._count(deduplicated=1)
            return
        report = build_report(failure, app=self.app, app_version=self.app_version)
        for uri in uris:
            if self._loops(uri, failure):
                log.warning(
                    "certpin reporter: report host of %s is the failing host %s; spooling the "
                    "report instead of sending it over an intercepted connection",
                    uri,
                    failure.host,
                )
                with self._cond:
                    self._count(looped=1)
                self._spool(uri, report)
                continue
            # Spool first, delete once delivered: a report in flight when the process dies
            # (or exits after the atexit bound) is still on disk for the next start.
            path = self._spool(uri, report, count=False)
            outcome = self._deliver(uri, report)
            if outcome != "failed" and path is not None:
                path.unlink(missing_ok=True)
            elif outcome == "failed" and path is not None:
                # Offline: the spool is retried in retry_interval, not right away.
                self._next_retry = time.monotonic() + self.retry_interval
                with self._cond:
                    self._count(spooled=1)

    def _loops(self, uri: str, failure: PinFailure) -> bool:
        host = urllib.parse.urlsplit(uri).hostname or ""
        try:
            name = normalize_host(host)
        except HostError:
            return False  # _deliver rejects the URI
        if name == failure.verdict.host:
            return True
        rule = failure.verdict.rule
        return rule is not None and self._policy().lookup(name) == rule

    # -- upload -----------------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            cafile, capath, cadata = self._trust
            # No on_failure here: a failing report host must not produce reports about itself.
            self._ctx = create_default_context(
                self._policy, cafile=cafile, capath=capath, cadata=cadata
            )
        return self._ctx

    def _deliver(self, uri: str, report: dict[str, Any]) -> str:
        """POST one report; returns "sent", "rejected" or "failed"."""
        outcome = self._post(uri, json.dumps(report).encode("utf-8"))
        with self._cond:
            self._count(**{outcome: 1})
        return outcome

    def _post(self, uri: str, body: bytes) -> str:
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            log.error("certpin reporter: unsupported report URI %r", uri)
            return "rejected"
        if parts.scheme == "http" and not self.allow_http:
            log.error("certpin reporter: refusing unencrypted report URI %r (allow_http)", uri)
            return "rejected"
        try:
            response = http.request(
                uri,
                context=self._context() if parts.scheme == "https" else None,
                method="POST",
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": f"certpin/{__version__}",
                },
                timeout=self.timeout,
                max_body=_MAX_RESPONSE,
            )
        except http.ERRORS as exc:
            reason = getattr(exc, "reason", None) or exc  # urllib's URLError wraps the cause
            log.warning("certpin reporter: cannot send report to %s: %s", uri, reason)
            return "failed"
        status = response.status
        if response.ok:
            return "sent"
        if 400 <= status < 500 and status != 429:
            log.error("certpin reporter: %s rejected the report (HTTP %d)", uri, status)
            return "rejected"
        log.warning("certpin reporter: %s answered HTTP %d; will retry", uri, status)
        return "failed"

    # -- spool ----------------------------------------------------------------------------------

    def _spool(self, uri: str, report: dict[str, Any], *, count: bool = True) -> Path | None:
        if self.spool_dir is None:
            return None
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            tag = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:12]
            name = f"{time.time_ns():020d}-{report.get('report-id', 'x')}-{tag}.json"
            data = json.dumps({"uri": uri, "report": report}).encode("utf-8")
            path = self.spool_dir / name
            # Atomic: a crash leaves either no file or the whole file, never a torn one. The
            # temporary file starts with "." and is never taken for a report (_spool_files).
            atomic_write(path, data, mode=0o600)
            if count:
                with self._cond:
                    self._count(spooled=1)
            files = self._spool_files()
            for old in files[: max(0, len(files) - self.max_spool)]:
                old.unlink(missing_ok=True)
            return path
        except OSError as exc:
            log.error("certpin reporter: cannot spool report to %s: %s", self.spool_dir, exc)
            return None

    def _spool_files(self) -> list[Path]:
        assert self.spool_dir is not None
        try:
            return sorted(p for p in self.spool_dir.glob("*.json") if not p.name.startswith("."))
        except OSError:
            return []

    def _retry_spool(self) -> None:
        for path in self._spool_files():
            with self._cond:
                if self._closing:
                    return
            try:
                entry = json.loads(path.read_bytes())
                uri, report = entry["uri"], entry["report"]
                if not isinstance(uri, str) or not isinstance(report, dict):
                    raise ValueError("bad spool entry")
            except (OSError, ValueError, KeyError, TypeError):
                log.error("certpin reporter: removing unreadable spool file %s", path)
                path.unlink(missing_ok=True)
                continue
            # Sent through the pinned context like any upload: while the report host still
            # fails its pins (the loop case), the handshake fails and the file stays.
            outcome = self._deliver(uri, report)
            if outcome == "failed":
                return  # still offline: keep the order, try again later
            path.unlink(missing_ok=True)


def reporting_hook(
    policy: Policy | PolicyProvider | Callable[[], Policy], **options: Any
) -> Reporter:
    """A started `Reporter` for ``create_default_context(policy, on_failure=...)``.

    Takes the same keyword arguments as `Reporter`.
    """
    reporter = Reporter(policy, **options)
    reporter.start()
    return reporter
