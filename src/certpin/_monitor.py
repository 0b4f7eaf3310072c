"""The endpoint monitor: many TLS endpoints checked concurrently against a policy.

For each endpoint, `check_endpoint` fetches the *verified* chain (`certpin._fetch`), asks
`certpin.verdict` for the decision (the monitor never matches pins itself), and adds what an
operator needs around it: days until the leaf and each CA expire, and a one-line message.
`run_once` checks a list of endpoints with bounded concurrency, each connection bounded by its
own timeout, so an unreachable or silent endpoint never stalls the run. `Monitor` adds the
state (what each endpoint looked like last time), change detection, the webhook, and the watch
loop. The ``certpin monitor`` command (`certpin._cli_monitor`) is a thin layer over it.

Statuses, most severe first (docs/monitor.md)::

    mismatch  the verified chain matches no pin of the host's rule (enforced or report-only)
    denied    no rule covers the host and the policy denies unpinned hosts
    error     no verified chain: refused, timeout, TLS failure, untrusted CA, expired, bad name
    warn      passes, but a certificate or the host's pin rule expires within warn_days
              (or the rule has already expired and is not enforced)
    ok        passes
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ConfigurationError
from ._fetch import ConnectError, fetch_chain_async, format_target
from ._hosts import Pattern, PatternKind
from ._policy import Policy
from ._verdict import Verdict, VerdictStatus, verdict

if TYPE_CHECKING:
    from ._load import PinSource

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WARN_DAYS",
    "WEBHOOK_TIMEOUT",
    "CertInfo",
    "EndpointReport",
    "Monitor",
    "Snapshot",
    "StateError",
    "Target",
    "Webhook",
    "WebhookError",
    "alert_event",
    "check_endpoint",
    "evaluate",
    "exit_code",
    "load_state",
    "policy_targets",
    "run_once",
    "save_state",
]

log = logging.getLogger("certpin.monitor")

DEFAULT_CONCURRENCY = 50
DEFAULT_TIMEOUT = 5.0
DEFAULT_WARN_DAYS = 30
#: seconds allowed for one webhook POST (connect, TLS, request and response).
WEBHOOK_TIMEOUT = 10.0
STATE_FORMAT = "certpin-monitor-state"
STATE_VERSION = 1

Status = Literal["ok", "warn", "mismatch", "denied", "error"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "mismatch", "denied", "error")

# Exit codes: the CLI's table (0 ok, 1 mismatch, 2 usage, 3 connection) plus 4 for warnings.
EXIT_OK, EXIT_MISMATCH, EXIT_CONNECTION, EXIT_WARNING = 0, 1, 3, 4

_DAY = 86400.0
_PASSING = frozenset({VerdictStatus.OK, VerdictStatus.UNPINNED, VerdictStatus.EXPIRED})


class StateError(ConfigurationError):
    """The state file exists but cannot be read or is not a monitor state file."""


class WebhookError(ConfigurationError):
    """The webhook URL is not acceptable (scheme, host)."""


# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One endpoint: where to connect and which name to verify and look pins up by.

    Attributes:
        host: host name or IP address to connect to.
        port: TCP port.
        servername: SNI / host name checked; None = `host`.
    """

    host: str
    port: int = 443
    servername: str | None = None

    @property
    def sni(self) -> str:
        return self.servername or self.host

    @property
    def key(self) -> str:
        """The endpoint's name in reports, the state file and webhook events."""
        label = format_target(self.host, self.port)
        if self.servername and self.servername != self.host:
            return f"{self.servername}@{label}"
        return label


@dataclass(frozen=True)
class CertInfo:
    """One certificate of the verified chain, for display (decisions are the verdict's)."""

    position: int
    pin: str
    subject: str
    issuer: str
    not_after: dt.datetime
    days_left: int
    is_ca: bool
    served: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "pin": self.pin,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": _iso(self.not_after),
            "days_left": self.days_left,
            "is_ca": self.is_ca,
            "served": self.served,
        }


@dataclass(frozen=True)
class Snapshot:
    """What is remembered of an endpoint between runs (the state file's entries).

    Two snapshots differ (an alert) when their status or their chain pins differ; the verdict
    and the time are informational.
    """

    status: Status
    verdict: str | None
    leaf_pin: str | None
    chain_pins: tuple[str, ...]
    checked_at: dt.datetime

    def differs(self, other: Snapshot) -> bool:
        return self.status != other.status or self.chain_pins != other.chain_pins

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "verdict": self.verdict,
            "leaf_pin": self.leaf_pin,
            "chain_pins": list(self.chain_pins),
            "checked_at": _iso(self.checked_at),
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> Snapshot:
        if not isinstance(data, dict):
            raise StateError(f"{where}: expected an object")
        status = data.get("status")
        if status not in STATUSES:
            raise StateError(f"{where}.status: expected one of {', '.join(STATUSES)}")
        pins = data.get("chain_pins")
        if not isinstance(pins, list) or not all(isinstance(p, str) for p in pins):
            raise StateError(f"{where}.chain_pins: expected a list of pin strings")
        leaf, verdict_ = data.get("leaf_pin"), data.get("verdict")
        if not (leaf is None or isinstance(leaf, str)):
            raise StateError(f"{where}.leaf_pin: expected a string or null")
        if not (verdict_ is None or isinstance(verdict_, str)):
            raise StateError(f"{where}.verdict: expected a string or null")
        try:
            checked = dt.datetime.fromisoformat(str(data.get("checked_at")).replace("Z", "+00:00"))
        except ValueError:
            raise StateError(f"{where}.checked_at: expected an ISO 8601 time") from None
        return cls(status, verdict_, leaf, tuple(pins), checked)


@dataclass(frozen=True)
class EndpointReport:
    """The result of checking one endpoint.

    Attributes:
        target: the endpoint.
        status: ``ok``, ``warn``, ``mismatch``, ``denied`` or ``error`` (module docstring).
        verdict: the verdict on the verified chain; None when no chain was obtained.
        chain: the verified chain, leaf first (empty on error).
        error: why no verified chain was obtained (status ``error``), else None.
        warnings: expiry warnings.
        checked_at: when the check started (UTC).
        elapsed: seconds spent connecting and checking.
        previous: the endpoint's snapshot from the last run, if any.
    """

    target: Target
    status: Status
    verdict: Verdict | None
    chain: tuple[CertInfo, ...]
    error: str | None
    warnings: tuple[str, ...]
    checked_at: dt.datetime
    elapsed: float
    previous: Snapshot | None = None

    @property
    def changed(self) -> bool | None:
        """True/False against the previous run; None when there is none (first sighting)."""
        return None if self.previous is None else self.previous.differs(self.snapshot())

    @property
    def leaf_days_left(self) -> int | None:
        return self.chain[0].days_left if self.chain else None

    @property
    def ca_days_left(self) -> int | None:
        """Days until the first CA certificate of the chain expires."""
        days = [c.days_left for c in self.chain[1:]]
        return min(days) if days else None

    @property
    def message(self) -> str:
        """One line saying what is wrong, or what was found."""
        if self.error is not None:
            return self.error
        assert self.verdict is not None
        parts = [self.verdict.reason]
        if self.verdict.pin_failure and self.verdict.report_only:
            parts.append("report-only: clients connect and report")
        parts += self.warnings
        return "; ".join(parts)

    def snapshot(self) -> Snapshot:
        pins = tuple(c.pin for c in self.chain)
        return Snapshot(
            status=self.status,
            verdict=None if self.verdict is None else self.verdict.status.value,
            leaf_pin=pins[0] if pins else None,
            chain_pins=pins,
            checked_at=self.checked_at,
        )

    def to_json(self) -> dict[str, Any]:
        v = self.verdict
        rule = None if v is None else v.rule
        return {
            "endpoint": self.target.key,
            "host": self.target.host,
            "port": self.target.port,
            "servername": self.target.sni,
            "status": self.status,
            "verdict": None if v is None else v.status.value,
            "allowed": None if v is None else v.allowed,
            "mode": None if rule is None else ("enforce" if rule.enforce else "report-only"),
            "rule": None if rule is None else rule.pattern,
            "rule_expires": None if rule is None else _iso(rule.expires),
            "matched_pin": None if v is None or v.matched_pin is None else str(v.matched_pin),
            "expected_pins": [] if v is None else [str(p) for p in v.expected_pins],
            "message": self.message,
            "error": self.error,
            "warnings": list(self.warnings),
            "leaf_days_left": self.leaf_days_left,
            "ca_days_left": self.ca_days_left,
            "chain": [c.to_json() for c in self.chain],
            "checked_at": _iso(self.checked_at),
            "elapsed_ms": round(self.elapsed * 1000, 1),
            "changed": self.changed,
            "previous": None if self.previous is None else self.previous.to_json(),
        }


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _days(until: dt.datetime, now: dt.datetime) -> int:
    """Whole days from `now` to `until`, rounded down (negative once past)."""
    return int((until - now).total_seconds() // _DAY)


# -- checking -------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _source(der: bytes) -> PinSource:
    # Endpoints behind one CA share its certificates: parse each distinct DER once per process.
    from ._load import load_sources

    (src,) = load_sources(der, source="<chain>")
    return src


def _cert_info(position: int, der: bytes, served: bool, now: dt.datetime) -> CertInfo:
    src = _source(der)
    assert src.not_after is not None  # a certificate always has one
    return CertInfo(
        position=position,
        pin=str(src.pin),
        subject=src.subject or "",
        issuer=src.issuer or "",
        not_after=src.not_after,
        days_left=_days(src.not_after, now),
        is_ca=bool(src.is_ca) or position > 0,
        served=served,
    )


def _expiry_warnings(
    chain: Sequence[CertInfo], result: Verdict, now: dt.datetime, warn_days: int
) -> list[str]:
    out = []
    for cert in chain:
        if cert.days_left < warn_days:
            what = "leaf" if cert.position == 0 else f"CA #{cert.position}"
            out.append(
                f"{what} certificate {cert.subject} expires in {cert.days_left} days "
                f"({_iso(cert.not_after)})"
            )
    rule = result.rule
    if rule is not None and rule.expires is not None:
        if result.status is VerdictStatus.EXPIRED:
            out.append(f"pins for {rule.pattern} expired on {_iso(rule.expires)}: not enforced")
        elif (left := _days(rule.expires, now)) < warn_days:
            out.append(f"pins for {rule.pattern} expire in {left} days ({_iso(rule.expires)})")
    return out


def _status(result: Verdict, warnings: Sequence[str]) -> Status:
    # Report-only failures are mismatches too (`certpin check` exits 1 for them as well).
    if result.status is VerdictStatus.DENIED:
        return "denied"
    if result.status not in _PASSING:
        return "mismatch"
    return "warn" if warnings else "ok"


def evaluate(
    target: Target,
    verified: Sequence[bytes],
    served: Iterable[bytes],
    policy: Policy,
    now: dt.datetime,
    warn_days: int = DEFAULT_WARN_DAYS,
    elapsed: float = 0.0,
) -> EndpointReport:
    """The report for a chain already fetched: verdict, expiry, status (pure)."""
    result = verdict(target.sni, verified, policy, now)
    served_set = set(served)
    try:
        chain = tuple(_cert_info(i, der, der in served_set, now) for i, der in enumerate(verified))
    except ConfigurationError as exc:  # Defensive: OpenSSL verified it, so it parses
        chain = ()
        warnings = [f"cannot describe the chain: {exc}"]
    else:
        warnings = _expiry_warnings(chain, result, now, warn_days)
    return EndpointReport(
        target, _status(result, warnings), result, chain, None, tuple(warnings), now, elapsed
    )


async def check_endpoint(
    target: Target,
    policy: Policy,
    *,
    context: ssl.SSLContext,
    timeout: float = DEFAULT_TIMEOUT,
    warn_days: int = DEFAULT_WARN_DAYS,
    clock: Callable[[], dt.datetime] | None = None,
) -> EndpointReport:
    """Connect to one endpoint (connect + handshake bounded by `timeout`) and report on it.

    Never raises for a connection problem: that is a report with status ``error``.
    """
    now = (clock or _utcnow)()
    start = time.perf_counter()
    try:
        # fetch_chain_async bounds connect + handshake by `timeout` and the close by 1 s; the
        # outer bound is a backstop so one endpoint can never hold the run longer than that.
        async with asyncio.timeout(timeout + 2.0):
            fetched = await fetch_chain_async(
                target.host, target.port, servername=target.sni, timeout=timeout, context=context
            )
    except ConnectError as exc:
        return _error(target, str(exc), now, time.perf_counter() - start)
    except TimeoutError:
        message = f"{target.key}: timed out after {timeout:g} s"
        return _error(target, message, now, time.perf_counter() - start)
    except (OSError, ssl.SSLError, ValueError) as exc:  # Defensive: anything else on the wire
        return _error(target, f"{target.key}: {exc}", now, time.perf_counter() - start)
    return evaluate(
        target,
        fetched.verified,
        fetched.served,
        policy,
        now,
        warn_days,
        time.perf_counter() - start,
    )


def _error(target: Target, message: str, now: dt.datetime, elapsed: float) -> EndpointReport:
    return EndpointReport(target, "error", None, (), message, (), now, elapsed)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def run_once(
    targets: Sequence[Target],
    policy: Policy,
    *,
    context: ssl.SSLContext,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    warn_days: int = DEFAULT_WARN_DAYS,
    clock: Callable[[], dt.datetime] | None = None,
    on_report: Callable[[EndpointReport], None] | None = None,
) -> list[EndpointReport]:
    """Check every target, at most `concurrency` at a time; reports in the order of `targets`.

    Each endpoint's timeout starts when it gets its turn, not while it queues.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> EndpointReport:
        async with gate:
            report = await check_endpoint(
                target,
                policy,
                context=context,
                timeout=timeout,
                warn_days=warn_days,
                clock=clock,
            )
        if on_report is not None:
            on_report(report)
        return report

    return list(await asyncio.gather(*(one(t) for t in targets)))


def exit_code(reports: Iterable[EndpointReport]) -> int:
    """0 all ok; 1 any mismatch/denied; else 3 any error; else 4 any warning."""
    statuses = {r.status for r in reports}
    if statuses & {"mismatch", "denied"}:
        return EXIT_MISMATCH
    if "error" in statuses:
        return EXIT_CONNECTION
    if "warn" in statuses:
        return EXIT_WARNING
    return EXIT_OK


def policy_targets(policy: Policy, port: int = 443) -> list[Target]:
    """The policy's exact domain keys as targets (wildcard keys name no host to connect to)."""
    out = []
    for key in policy.domains:
        if Pattern.parse(key).kind is PatternKind.EXACT:
            out.append(Target(key, port))
    return out


# -- state ----------------------------------------------------------------------------------


def load_state(path: str | os.PathLike[str]) -> dict[str, Snapshot]:
    """Read a state file; a missing file is an empty state.

    Raises:
        StateError: unreadable, not JSON, or not a monitor state file (message names the file).
    """
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError(f"{name}: cannot read state file: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{name}: line {exc.lineno}: not JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise StateError(f"{name}: not a certpin monitor state file (no format={STATE_FORMAT!r})")
    if data.get("version") != STATE_VERSION:
        raise StateError(f"{name}: unsupported state version {data.get('version')!r}")
    endpoints = data.get("endpoints")
    if not isinstance(endpoints, dict):
        raise StateError(f"{name}: endpoints: expected an object")
    return {
        key: Snapshot.from_json(value, f"{name}: endpoints.{json.dumps(key)}")
        for key, value in endpoints.items()
    }


def save_state(
    path: str | os.PathLike[str], state: Mapping[str, Snapshot], now: dt.datetime | None = None
) -> None:
    """Write the state atomically: a temporary file in the same directory, fsync, rename.

    A crash or Ctrl-C leaves either the old file or the new one, never half of one.
    """
    target = Path(path)
    document = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "updated": _iso(now or _utcnow()),
        "endpoints": {key: snap.to_json() for key, snap in sorted(state.items())},
    }
    data = (json.dumps(document, indent=2) + "\n").encode()
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- webhook --------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could move the POST to another host or to plain http: refuse them all.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Webhook:
    """POSTs alert events as JSON.

    https URLs are verified like the endpoints (``cafile`` or the system store) *and pinned* if
    the policy has a rule for the webhook's host (`certpin.create_default_context`); plain http
    is accepted for loopback hosts only. Redirects are not followed. A failed delivery is logged
    (logger ``certpin.monitor``) and counted, never raised.
    """

    url: str
    policy: Policy = field(default_factory=lambda: Policy({}))
    cafile: str | None = None
    timeout: float = WEBHOOK_TIMEOUT
    delivered: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname
        if parts.scheme not in ("https", "http") or not host:
            raise WebhookError(f"--webhook {self.url!r}: expected an https:// URL")
        if parts.scheme == "http" and not _is_loopback(host):
            raise WebhookError(
                f"--webhook {self.url!r}: plain http is only allowed to localhost/loopback; "
                "use https (the alerts describe your endpoints and must not be forged)"
            )
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if parts.scheme == "https":
            from ._context import create_default_context

            ctx = create_default_context(self.policy, cafile=self.cafile)
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        self._opener = urllib.request.build_opener(*handlers)

    def post(self, event: Mapping[str, Any]) -> bool:
        """Deliver one event (blocking, bounded by `timeout`); True if the server took it."""
        body = json.dumps(event).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "certpin-monitor"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            self.failed += 1
            log.warning("webhook %s: HTTP %s %s", self.url, exc.code, exc.reason)
            exc.close()
            return False
        except (OSError, ValueError) as exc:  # URLError, timeouts, TLS and pin failures
            self.failed += 1
            reason = getattr(exc, "reason", None) or exc
            log.warning("webhook %s: delivery failed: %s", self.url, reason)
            return False
        self.delivered += 1
        return True

    async def post_async(self, event: Mapping[str, Any]) -> bool:
        """`post` in a worker thread, so the event loop keeps running."""
        return await asyncio.get_running_loop().run_in_executor(None, self.post, event)


def alert_event(report: EndpointReport) -> dict[str, Any]:
    """The webhook body (and ``--json`` watch line) for an endpoint that changed."""
    current = report.snapshot()
    return {
        "event": "changed",
        "time": _iso(report.checked_at),
        "endpoint": report.target.key,
        "previous": None if report.previous is None else report.previous.to_json(),
        "current": current.to_json(),
        "verdict": current.verdict,
        "message": report.message,
    }


# -- rounds and watching --------------------------------------------------------------------


@dataclass
class Monitor:
    """Rounds of checks with memory: previous snapshots, alerts on change, a webhook.

    Attributes:
        state_path: where snapshots persist between runs; None = in memory only.
        webhook: where alerts are POSTed, or None.
    """

    targets: Sequence[Target]
    policy: Policy
    context: ssl.SSLContext
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    warn_days: int = DEFAULT_WARN_DAYS
    state_path: str | os.PathLike[str] | None = None
    webhook: Webhook | None = None
    clock: Callable[[], dt.datetime] | None = None
    state: dict[str, Snapshot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state_path is not None:
            self.state = load_state(self.state_path)  # StateError before any connection

    async def round(
        self, on_report: Callable[[EndpointReport], None] | None = None
    ) -> tuple[list[EndpointReport], list[EndpointReport]]:
        """Check every target once; returns (reports, the ones that changed).

        The state is updated (and saved) before the alerts are delivered.
        """
        reports = await run_once(
            self.targets,
            self.policy,
            context=self.context,
            concurrency=self.concurrency,
            timeout=self.timeout,
            warn_days=self.warn_days,
            clock=self.clock,
            on_report=on_report,
        )
        reports = [replace(r, previous=self.state.get(r.target.key)) for r in reports]
        for report in reports:
            self.state[report.target.key] = report.snapshot()
        if self.state_path is not None:
            save_state(self.state_path, self.state)
        changed = [r for r in reports if r.changed]
        if self.webhook is not None and changed:
            webhook = self.webhook
            await asyncio.gather(*(webhook.post_async(alert_event(r)) for r in changed))
        return reports, changed

    async def watch(
        self,
        interval: float,
        *,
        max_runs: int | None = None,
        on_round: Callable[[int, list[EndpointReport], list[EndpointReport]], Awaitable[None]]
        | Callable[[int, list[EndpointReport], list[EndpointReport]], None]
        | None = None,
        on_report: Callable[[EndpointReport], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> list[EndpointReport]:
        """Run a round every `interval` seconds (start to start) until `max_runs` rounds or
        `stop` is set; returns the last round's reports. `on_round(n, reports, changed)` is
        called after each round (n from 0)."""
        stop = stop or asyncio.Event()
        last: list[EndpointReport] = []
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            last, changed = await self.round(on_report)
            if on_round is not None:
                result = on_round(n, last, changed)
                if asyncio.iscoroutine(result):
                    await result
            n += 1
            if max_runs is not None and n >= max_runs:
                break
            delay = max(0.0, interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return last
