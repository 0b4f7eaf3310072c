"""``certpin monitor``: check many TLS endpoints against a policy, once or on a schedule.

A thin layer over `certpin.lifecycle.monitor.check` (reference: docs/monitor.md). Exit codes
(`ExitCode`): 0 all ok, 1 any pin mismatch or denied host, 2 usage/input error, 3 any endpoint
unreachable or failing TLS/CA verification (and no mismatch), 4 expiry warnings only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.messages import explain
from certpin.cli.options import Verb, cafile_option, json_option, policy_option, timeout_option
from certpin.cli.output import note, print_json, progress_bars
from certpin.core.times import iso
from certpin.lifecycle.monitor.check import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, DEFAULT_WARN_DAYS

if TYPE_CHECKING:
    from certpin.core.policy import Policy
    from certpin.lifecycle.monitor.check import EndpointReport, Monitor, Target

__all__ = ["monitor_command"]

_STYLES = {
    "ok": "green",
    "warn": "yellow",
    "mismatch": "bold red",
    "denied": "bold red",
    "revoked": "bold red",
    "error": "red",
}


@click.command("monitor", cls=Verb)
@click.argument("targets", nargs=-1, metavar="[HOST[:PORT]]...")
@click.option(
    "--targets-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File of HOST[:PORT] targets, one per line ('#' starts a comment).",
)
@policy_option(required=False)
@cafile_option()
@json_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Endpoints checked at the same time.",
)
@timeout_option(
    DEFAULT_TIMEOUT, "Seconds allowed per endpoint for the TCP connection and the TLS handshake."
)
@click.option(
    "--warn-days",
    type=click.IntRange(min=0),
    default=DEFAULT_WARN_DAYS,
    show_default=True,
    help="Warn when a certificate or a pin rule expires within this many days.",
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Check again every SECONDS until interrupted; alert on changes only.",
)
@click.option(
    "--state",
    "state_file",
    metavar="FILE",
    help="JSON file remembering each endpoint between runs (change detection).",
)
@click.option(
    "--webhook",
    metavar="URL",
    help="POST a JSON event here when an endpoint changes (https; http for loopback only).",
)
@click.option(
    "--no-revocation",
    is_flag=True,
    help="Skip the revocation checks (stapled OCSP, OCSP responder, CRL).",
)
@click.option(
    "--log-list",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="CT log list (v3 log_list.json) to name and verify the leaf's embedded SCTs.",
)
@click.option("--max-runs", type=click.IntRange(min=1), hidden=True, help="Stop after N rounds.")
def monitor_command(
    targets: tuple[str, ...],
    targets_file: str | None,
    policy_file: str | None,
    cafile: str | None,
    as_json: bool,
    concurrency: int,
    timeout: float,
    warn_days: int,
    watch: float | None,
    state_file: str | None,
    webhook: str | None,
    no_revocation: bool,
    log_list: str | None,
    max_runs: int | None,
) -> int:
    """Check TLS endpoints concurrently: pins (against --policy), chain, expiry, changes.

    TARGETS are HOST[:PORT] (default port 443); without TARGETS or --targets-file, the
    policy's exact domain keys are checked. Exit status: 0 all ok; 1 a pin mismatch or a
    denied host, or a revoked certificate that a pin covers; 2 usage or input error; 3 an
    endpoint unreachable or failing TLS/CA verification; 4 only expiry warnings (within
    --warn-days).
    """
    from certpin.core.policy import Policy
    from certpin.lifecycle.monitor.check import Monitor, Webhook
    from certpin.tls.context import verifying_context

    # Without --policy every endpoint is checked as unpinned: CA validation and expiry only.
    policy = Policy.from_file(policy_file) if policy_file else Policy.from_dict({})
    endpoints = _targets(targets, targets_file, policy if policy_file else None)
    if webhook is not None and watch is None and state_file is None:
        raise click.UsageError("--webhook alerts on changes: it needs --state FILE or --watch")
    if max_runs is not None and watch is None:
        raise click.UsageError("--max-runs only applies with --watch")
    hook = Webhook(webhook, policy=policy, cafile=cafile) if webhook else None
    logs = None
    if log_list is not None:
        from certpin.lifecycle.ct.loglist import load_log_list

        logs = load_log_list(log_list)  # LogListError -> exit 2 before any connection
    monitor = Monitor(
        endpoints,
        policy,
        verifying_context(cafile=cafile),
        concurrency=concurrency,
        timeout=timeout,
        warn_days=warn_days,
        state_path=state_file,
        webhook=hook,
        revocation=not no_revocation,
        log_list=logs,
    )
    with _log_to_stderr():
        if watch is not None:
            return _watch(monitor, watch, max_runs, policy_file, as_json, cafile)
        with _progress(len(endpoints), enabled=not as_json) as tick:
            reports, _changed = asyncio.run(monitor.round(tick))
    _print_report(reports, policy_file, policy, as_json, cafile)
    return _exit(reports)


def _exit(reports: list[EndpointReport]) -> ExitCode:
    from certpin.lifecycle.monitor.check import exit_code

    return ExitCode(exit_code(reports))


# -- targets --------------------------------------------------------------------------------


def _targets(
    args: tuple[str, ...], targets_file: str | None, policy: Policy | None
) -> list[Target]:
    from certpin.lifecycle.monitor.check import Target, policy_targets
    from certpin.tls.fetch import parse_target

    found: list[tuple[str, str]] = [(text, "TARGETS") for text in args]
    if targets_file is not None:
        try:
            lines = Path(targets_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(str(exc), param_hint="--targets-file") from None
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                found.append((text, f"{targets_file}:{number}"))
    endpoints: list[Target] = []
    for text, where in found:
        try:
            host, port = parse_target(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=where) from None
        endpoints.append(Target(host, port))
    if not found:
        if policy is None:
            raise click.UsageError("give TARGETS, --targets-file, or a --policy to take them from")
        endpoints = policy_targets(policy)
        if not endpoints:
            raise click.UsageError(
                f"{policy.source}: no exact domain keys to connect to (only wildcards); "
                "give TARGETS"
            )
    return list(dict.fromkeys(endpoints))  # each endpoint once, first-seen order


# -- running --------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """Writes to the *current* sys.stderr (click.echo), whatever it was when created."""

    def emit(self, record: logging.LogRecord) -> None:
        note(record.getMessage())


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Webhook failures are logged, not fatal: show them on stderr while the command runs."""
    logger = logging.getLogger("certpin.monitor")
    handler = _StderrHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; yields the per-report callback."""
    with progress_bars(enabled=enabled) as progress:
        if progress is None:
            yield None
            return
        task = progress.add_task("checking", total=total)
        yield lambda _report: progress.advance(task)


def _watch(
    monitor: Monitor,
    interval: float,
    max_runs: int | None,
    policy_file: str | None,
    as_json: bool,
    cafile: str | None,
) -> int:
    from certpin.lifecycle.monitor.check import alert_event, exit_code

    last_code = 0

    def on_round(n: int, reports: list[EndpointReport], changed: list[EndpointReport]) -> None:
        nonlocal last_code
        last_code = exit_code(reports)
        if n == 0 and not as_json:
            _print_report(reports, policy_file, monitor.policy, False, cafile)
            return
        for report in changed:
            if as_json:
                click.echo(json.dumps(alert_event(report)))
            else:
                click.echo(_alert_line(report, cafile))
        sys.stdout.flush()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        await monitor.watch(interval, max_runs=max_runs, on_round=on_round, stop=stop)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        # The state file is only ever replaced whole, so an interrupt leaves it consistent.
        note("monitor stopped")
        return ExitCode.OK
    return last_code if max_runs is not None else ExitCode.OK


def _alert_line(report: EndpointReport, cafile: str | None) -> str:
    prev = report.previous
    before = "?" if prev is None else prev.status
    pins = ""
    if prev is not None and prev.chain_pins != report.snapshot().chain_pins:
        pins = "; chain pins changed"
    when = iso(report.checked_at)
    message = explain(report.message, cafile)
    return f"{when} CHANGED {report.target.key}: {before} -> {report.status}{pins}: {message}"


# -- output ---------------------------------------------------------------------------------


def _summary(reports: list[EndpointReport]) -> dict[str, int]:
    from certpin.lifecycle.monitor.check import STATUSES

    counts: dict[str, int] = {status: 0 for status in STATUSES}
    for report in reports:
        counts[report.status] += 1
    counts["changed"] = sum(1 for r in reports if r.changed)
    return counts


def _print_report(
    reports: list[EndpointReport],
    policy_file: str | None,
    policy: Policy,
    as_json: bool,
    cafile: str | None,
) -> None:
    from certpin.lifecycle.monitor.check import exit_code

    summary = _summary(reports)
    if as_json:
        document = {
            "time": iso(dt.datetime.now(dt.UTC)),
            "policy": policy_file,
            "policy_version": policy.version,
            "exit_code": exit_code(reports),
            "summary": summary,
            "endpoints": [r.to_json() for r in reports],
        }
        print_json(document)
        return
    counts = ", ".join(f"{n} {s}" for s, n in summary.items() if n and s != "changed")
    line = f"{len(reports)} endpoint(s): {counts or 'none'}"
    if summary["changed"]:
        line += f"; {summary['changed']} changed since the last run"
    messages = [explain(r.message, cafile) for r in reports]
    if sys.stdout.isatty():
        _print_rich(reports, messages, line)
    else:
        _print_plain(reports, messages, line)


def _changed_text(report: EndpointReport) -> str:
    return {None: "new", True: "CHANGED", False: "unchanged"}[report.changed]


def _days_text(days: int | None) -> str:
    return "-" if days is None else f"{days} d"


def _chain_lines(report: EndpointReport) -> list[str]:
    lines = []
    for cert in report.chain:
        sent = "" if cert.served else "  [not sent by the server]"
        lines.append(f"  #{cert.position}  {cert.pin}  {cert.days_left} d  {cert.subject}{sent}")
    for rev in report.revocation or ():
        lines.append(f"  revocation #{rev.position}: {rev.status}: {rev.reason}")
    if report.scts is not None and report.chain:
        lines.append(f"  SCTs: {report.scts.summary()}")
    return lines


def _print_plain(reports: list[EndpointReport], messages: list[str], summary: str) -> None:
    out = []
    for report, message in zip(reports, messages, strict=True):
        verdict = "-" if report.verdict is None else report.verdict.status.value
        out.append(
            f"{report.target.key}  {report.status.upper()}  verdict={verdict}  "
            f"leaf={_days_text(report.leaf_days_left)}  ca={_days_text(report.ca_days_left)}  "
            f"{_changed_text(report)}"
        )
        out.append(f"  {message}")
        out += _chain_lines(report)
    out.append(summary)
    click.echo("\n".join(out))


def _print_rich(reports: list[EndpointReport], messages: list[str], summary: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=True, highlight=False)
    table = Table(show_lines=False)
    for name in ("Endpoint", "Status", "Verdict", "Leaf", "CAs", "Changed", "Message"):
        table.add_column(name, no_wrap=name != "Message", overflow="fold")
    for report, message in zip(reports, messages, strict=True):
        style = _STYLES[report.status]
        table.add_row(
            escape(report.target.key),
            f"[{style}]{report.status}[/{style}]",
            "-" if report.verdict is None else report.verdict.status.value,
            _days_text(report.leaf_days_left),
            _days_text(report.ca_days_left),
            _changed_text(report),
            escape(message),
        )
    console.print(table)
    # Pins never go in a table cell: a folded pin cannot be copied.
    for report in reports:
        if report.chain:
            console.print(f"[bold]{escape(report.target.key)}[/bold] verified chain:")
            for line in _chain_lines(report):
                console.print(escape(line))
    console.print(summary)
