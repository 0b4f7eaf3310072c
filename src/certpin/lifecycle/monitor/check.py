"""The endpoint monitor: many TLS endpoints checked concurrently against a policy.

For each endpoint, `check_endpoint` fetches the *verified* chain (`certpin.tls.fetch`), asks
`certpin.verdict` for the decision (the monitor never matches pins itself), and adds what an
operator needs around it: days until the leaf and each CA expire, and a one-line message.
`run_once` checks a list of endpoints with bounded concurrency, each connection bounded by its
own timeout, so an unreachable or silent endpoint never stalls the run. `Monitor` adds the
state (what each endpoint looked like last time), change detection, the webhook, and the watch
loop. The ``certpin monitor`` command (`certpin.cli.monitor`) is a thin layer over it.

Statuses, most severe first (docs/monitor.md)::

    mismatch  the verified chain matches no pin of the host's rule (enforced or report-only)
    denied    no rule covers the host and the policy denies unpinned hosts
    revoked   a certificate a pin of the host's rule covers is revoked (OCSP/CRL): rotate to
              the backup key
    error     no verified chain: refused, timeout, TLS failure, untrusted CA, expired, bad name
    warn      passes, but a certificate or the host's pin rule expires within warn_days
              (or the rule has already expired, or a signed kill switch suspends its pins:
              not enforced)
    ok        passes
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from certpin._errors import ConfigurationError
from certpin.core.hosts import HostPattern, PatternKind
from certpin.core.policy import Policy
from certpin.core.times import iso
from certpin.core.verdict import Outcome, Verdict, VerdictStatus, verdict
from certpin.lifecycle.monitor.state import (
    STATUSES,
    WEBHOOK_BUDGET,
    WEBHOOK_TIMEOUT,
    WEBHOOK_WORKERS,
    Snapshot,
    StateError,
    Status,
    Webhook,
    WebhookError,
    load_state,
    save_state,
)
from certpin.tls.fetch import ConnectError, fetch_chain_async, format_target

if TYPE_CHECKING:
    from certpin.core.sources import PinSource
    from certpin.lifecycle.ct.loglist import LogInfo
    from certpin.lifecycle.revocation import Revocation
    from certpin.lifecycle.sct import SctReport

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WARN_DAYS",
    "STATUSES",
    "WEBHOOK_BUDGET",
    "WEBHOOK_TIMEOUT",
    "WEBHOOK_WORKERS",
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

DEFAULT_CONCURRENCY = 50
DEFAULT_TIMEOUT = 5.0
DEFAULT_WARN_DAYS = 30

# Exit codes: the CLI's table (0 ok, 1 mismatch, 2 usage, 3 connection) plus 4 for warnings.
EXIT_OK, EXIT_MISMATCH, EXIT_CONNECTION, EXIT_WARNING = 0, 1, 3, 4

_DAY = 86400.0


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
            "not_after": iso(self.not_after),
            "days_left": self.days_left,
            "is_ca": self.is_ca,
            "served": self.served,
        }


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
    revocation: tuple[Revocation, ...] | None = None
    revocation_alerts: tuple[str, ...] = ()
    scts: SctReport | None = None

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
        parts = [*self.revocation_alerts, self.verdict.reason]
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
            "rule_expires": None if rule is None else iso(rule.expires),
            "matched_pin": None if v is None or v.matched_pin is None else str(v.matched_pin),
            "expected_pins": [] if v is None else [str(p) for p in v.expected_pins],
            "message": self.message,
            "error": self.error,
            "warnings": list(self.warnings),
            "leaf_days_left": self.leaf_days_left,
            "ca_days_left": self.ca_days_left,
            "chain": [c.to_json() for c in self.chain],
            "checked_at": iso(self.checked_at),
            "elapsed_ms": round(self.elapsed * 1000, 1),
            "changed": self.changed,
            "previous": None if self.previous is None else self.previous.to_json(),
            "revocation": None
            if self.revocation is None
            else [r.to_json() for r in self.revocation],
            "revocation_alerts": list(self.revocation_alerts),
            "scts": None if self.scts is None else self.scts.to_json(),
        }


def _days(until: dt.datetime, now: dt.datetime) -> int:
    """Whole days from `now` to `until`, rounded down (negative once past)."""
    return int((until - now).total_seconds() // _DAY)


# -- checking -------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _source(der: bytes) -> PinSource:
    # Endpoints behind one CA share its certificates: parse each distinct DER once per process.
    from certpin.core.sources import load_sources

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
                f"({iso(cert.not_after)})"
            )
    rule = result.rule
    if result.status is VerdictStatus.KILLED and rule is not None:
        switch = rule.kill_switch
        until = "" if switch is None else f" until {iso(switch.until)}"
        why = "" if switch is None or not switch.reason else f" ({switch.reason})"
        out.append(f"pins for {rule.pattern} suspended by a signed kill switch{until}{why}")
    elif rule is not None and rule.expires is not None:
        if result.status is VerdictStatus.EXPIRED:
            out.append(f"pins for {rule.pattern} expired on {iso(rule.expires)}: not enforced")
        elif (left := _days(rule.expires, now)) < warn_days:
            out.append(f"pins for {rule.pattern} expire in {left} days ({iso(rule.expires)})")
    return out


def _status(result: Verdict, warnings: Sequence[str]) -> Status:
    # The verdict's own properties decide (a new status such as KILLED is classified there,
    # once). Report-only failures are mismatches too (`certpin check` exits 1 for them as well).
    if result.outcome is Outcome.DENIED:
        return "denied"
    if result.outcome is Outcome.MISMATCH:
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
    revocation: bool = False,
    log_list: Sequence[LogInfo] | None = None,
) -> EndpointReport:
    """Connect to one endpoint (connect + handshake bounded by `timeout`) and report on it.

    With `revocation`, each certificate's revocation status is checked too
    (`certpin.lifecycle.staple.check_live`, in a thread, bounded by its deadline); a revoked
    certificate that a pin covers makes the status ``revoked``. The leaf's embedded SCTs are
    reported (verified with `log_list` when given).

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
    report = evaluate(
        target,
        fetched.verified,
        fetched.served,
        policy,
        now,
        warn_days,
        time.perf_counter() - start,
    )
    return await _revocation(report, fetched.verified, now, timeout, revocation, log_list)


async def _revocation(
    report: EndpointReport,
    chain: Sequence[bytes],
    now: dt.datetime,
    timeout: float,
    revocation: bool,
    log_list: Sequence[LogInfo] | None,
) -> EndpointReport:
    """`report` with the chain's revocation status and the leaf's SCTs added."""
    from certpin.lifecycle.revocation import alert
    from certpin.lifecycle.sct import embedded_scts

    scts = embedded_scts(chain[0], chain[1] if len(chain) > 1 else None, log_list)
    if not revocation:
        return replace(report, scts=scts)
    from certpin.lifecycle.staple import check_live

    target = report.target
    revs = await asyncio.to_thread(
        check_live, target.host, target.port, target.sni, chain, now, timeout=timeout
    )
    rule = None if report.verdict is None else report.verdict.rule
    alerts = [] if rule is None else [alert(r, rule.all_pins) for r in revs]
    found = tuple(line for line in alerts if line is not None)
    status = report.status
    if found and status not in ("mismatch", "denied"):
        status = "revoked"
    return replace(
        report, status=status, revocation=tuple(revs), revocation_alerts=found, scts=scts
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
    revocation: bool = False,
    log_list: Sequence[LogInfo] | None = None,
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
                revocation=revocation,
                log_list=log_list,
            )
        if on_report is not None:
            on_report(report)
        return report

    return list(await asyncio.gather(*(one(t) for t in targets)))


def exit_code(reports: Iterable[EndpointReport]) -> int:
    """0 all ok; 1 any mismatch/denied/revoked; else 3 any error; else 4 any warning."""
    statuses = {r.status for r in reports}
    if statuses & {"mismatch", "denied", "revoked"}:
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
        if HostPattern.parse(key).kind is PatternKind.EXACT:
            out.append(Target(key, port))
    return out


def alert_event(report: EndpointReport) -> dict[str, Any]:
    """The webhook body (and ``--json`` watch line) for an endpoint that changed."""
    current = report.snapshot()
    return {
        "event": "changed",
        "time": iso(report.checked_at),
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
    revocation: bool = False
    log_list: Sequence[LogInfo] | None = None

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
            revocation=self.revocation,
            log_list=self.log_list,
        )
        reports = [replace(r, previous=self.state.get(r.target.key)) for r in reports]
        for report in reports:
            self.state[report.target.key] = report.snapshot()
        if self.state_path is not None:
            save_state(self.state_path, self.state)
        changed = [r for r in reports if r.changed]
        if self.webhook is not None and changed:
            # Bounded (Webhook.round_budget): a dead webhook drops alerts, it never stalls checks.
            await self.webhook.post_all([alert_event(r) for r in changed])
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
