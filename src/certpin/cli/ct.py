"""``certpin ct``: Certificate Transparency watching (reference: docs/ct.md).

``ct watch`` reads CT logs for certificates a policy covers and decides each with the verdict;
``ct hook`` does the same for one certificate certspotter found (a ``hooks.d`` script). Exit
codes: 0 no unexpected certificate, 1 at least one, 2 bad input (the message names the file), 3
a log misbehaved (wins over 1).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.options import Verb, json_option, policy_option
from certpin.cli.output import progress_bars

if TYPE_CHECKING:
    from certpin.lifecycle.ct.loglist import LogInfo
    from certpin.lifecycle.ct.watch import RoundSummary

__all__ = ["ct_group"]

_STYLES = {"unexpected": "bold red", "pinned": "green", "log_error": "red"}


@click.group("ct")
def ct_group() -> None:
    """Certificate Transparency: which certificates CAs logged for your pinned names."""


def _webhook_option(func: Any) -> Any:
    func = click.option(
        "--webhook-token-file",
        "webhook_token_file",
        metavar="FILE",
        help="Send the token in FILE as 'Authorization: Bearer <token>' with each POST (the "
        "collector's /api/ct wants its admin token).",
    )(func)
    return click.option(
        "--webhook",
        metavar="URL",
        help="POST each unexpected certificate here (https; http for loopback only); "
        "a certpin collector's https://HOST/api/ct takes it as is.",
    )(func)


@ct_group.command("watch", cls=Verb, required_options=("policy_file",))
@policy_option(required=False)
@click.option(
    "--log-list",
    "log_list",
    required=True,
    metavar="FILE_OR_URL",
    help="A v3 log_list.json (Chrome/Apple schema): RFC 6962 and tiled logs.",
)
@click.option("--state", "state_dir", metavar="DIR", help="Directory keeping each log's position.")
@click.option("--once", is_flag=True, help="Read what is there and exit (default: poll).")
@click.option(
    "--start-at",
    type=click.Choice(["beginning", "end"]),
    default="beginning",
    show_default=True,
    help="Where to start in a log the state does not know yet.",
)
@json_option
@_webhook_option
@click.option(
    "--interval",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Without --once: seconds between rounds (start to start).",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    help="Requests in flight per log.",
)
@click.option("--max-runs", type=click.IntRange(min=1), hidden=True, help="Stop after N rounds.")
@click.option("--chunk", type=click.IntRange(min=256), hidden=True, help="Entries per commit.")
def watch_command(
    policy_file: str,
    log_list: str,
    state_dir: str | None,
    once: bool,
    start_at: str,
    as_json: bool,
    webhook: str | None,
    webhook_token_file: str | None,
    interval: float,
    parallel: int,
    max_runs: int | None,
    chunk: int | None,
) -> int:
    """Watch CT logs for certificates of the policy's names; decide each with the pins.

    Prints every covered certificate (pinned or unexpected) and every misbehaving log. Exit
    status: 0 no unexpected certificate; 1 at least one; 2 bad input; 3 a log misbehaved.
    """
    from certpin.core.policy import Policy
    from certpin.lifecycle.ct.http import HttpClient
    from certpin.lifecycle.ct.loglist import load_log_list
    from certpin.lifecycle.ct.watch import DEFAULT_CHUNK, Watcher

    policy = Policy.from_file(policy_file)
    hook = _webhook(webhook, webhook_token_file, policy)  # bad input: before anything is fetched
    with contextlib.closing(HttpClient()) as http:

        def fetch(url: str, limit: int) -> bytes:
            from certpin.lifecycle.ct.errors import LogError

            status, body = http.get(url, limit)
            if status != 200:
                raise LogError(f"HTTP {status}")
            return body

        logs = load_log_list(log_list, fetch=fetch)
        if not any(info.watched for info in logs):
            raise click.UsageError(
                f"{log_list}: no log to watch (every log is pending, rejected or retired)"
            )
        printer = _Printer(as_json, tty=sys.stdout.isatty() and not as_json)
        with _log_to_stderr(), _progress(enabled=not as_json) as progress:
            watcher = Watcher(
                logs,
                policy,
                state_dir=state_dir,
                start_at="end" if start_at == "end" else "beginning",
                emit=printer.emit,
                webhook=hook,
                progress=progress,
                http=http,
                parallel=parallel,
                chunk=chunk or DEFAULT_CHUNK,
            )
            if once:
                summary = watcher.run_once()
                printer.finish(summary, len(watcher.logs))
                return ExitCode(summary.exit_code)
            return _poll(watcher, printer, interval, max_runs)


def _poll(watcher: Any, printer: _Printer, interval: float, max_runs: int | None) -> int:
    stop = threading.Event()
    worst = 0

    def on_round(summary: RoundSummary) -> None:
        nonlocal worst
        worst = max(worst, summary.exit_code)
        printer.finish(summary, len(watcher.logs))

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread (in-process callers)
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        watcher.watch(interval, max_runs=max_runs, stop=stop, on_round=on_round)
    except KeyboardInterrupt:
        click.echo("certpin: ct watch stopped", err=True)
        return ExitCode.OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    # A cron-run poller (--max-runs) reports like --once; a service stopped by SIGTERM exits 0.
    return worst if max_runs is not None else ExitCode.OK


#: Longest webhook token file read.
_MAX_TOKEN_FILE = 4096


def _webhook(url: str | None, token_file: str | None, policy: Any) -> Any:
    from certpin.lifecycle.monitor.state import Webhook, WebhookError

    if url is None:
        if token_file is not None:
            raise click.UsageError("--webhook-token-file needs --webhook")
        return None
    token = None
    if token_file is not None:
        try:
            with open(token_file, "rb") as f:
                data = f.read(_MAX_TOKEN_FILE + 1)
            token = data.decode("ascii").strip()
        except OSError as exc:
            raise WebhookError(f"{token_file}: cannot read the token: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise WebhookError(f"{token_file}: the token is not ASCII text") from None
        if len(data) > _MAX_TOKEN_FILE or not token or any(c.isspace() for c in token):
            raise WebhookError(
                f"{token_file}: expected one token (1..{_MAX_TOKEN_FILE} visible ASCII "
                "characters) on one line"
            )
    try:
        return Webhook(url, policy=policy, token=token)
    except WebhookError as exc:
        where = f" ({token_file})" if token_file and "token" in str(exc) else ""
        raise WebhookError(f"{exc}{where}") from None


@ct_group.command("hook", cls=Verb, required_options=("policy_file",))
@policy_option(required=False)
@json_option
@_webhook_option
@click.option(
    "--exit-status",
    type=click.Choice(["table", "certspotter"]),
    default="table",
    show_default=True,
    help="table: 1 for an unexpected key (as `ct watch`). certspotter: 0 once it is passed "
    "on, 1 only if the webhook did not take it (certspotter stops a log on any other status).",
)
def hook_command(
    policy_file: str,
    as_json: bool,
    webhook: str | None,
    webhook_token_file: str | None,
    exit_status: str,
) -> int:
    """Run as a certspotter hooks.d script: pass on only certificates with unexpected keys.

    Reads certspotter's environment (EVENT, CERT_FILENAME, PUBKEY_SHA256, LOG_URI, …) and
    prints the unexpected certificate's record (and POSTs it to --webhook). Exit status with
    --exit-status table: 0 the key is pinned or no rule covers the names; 1 an unexpected key;
    2 bad input.
    """
    from certpin.core.policy import Policy
    from certpin.lifecycle.ct.hook import hook_record
    from certpin.lifecycle.ct.watch import webhook_event

    policy = Policy.from_file(policy_file)
    hook = _webhook(webhook, webhook_token_file, policy)
    now = dt.datetime.now(dt.UTC)
    record = hook_record(os.environ, policy, now)
    if record is None:
        return ExitCode.OK
    click.echo(json.dumps(record, ensure_ascii=False) if as_json else _line(record))
    delivered = True
    if hook is not None:
        with _log_to_stderr():
            delivered = hook.post(webhook_event(record, now))
    if exit_status == "certspotter":
        # certspotter retries a notification whose script failed: only ask for that when the
        # alert did not get through.
        return ExitCode.OK if delivered else ExitCode.FAILED
    return ExitCode.FAILED


# -- output ---------------------------------------------------------------------------------


def _line(record: dict[str, Any]) -> str:
    if record["kind"] == "log_error":
        return f"LOG ERROR {record['log']}: {record['reason']}"
    names = ", ".join(record["names"][:5]) + (" …" if len(record["names"]) > 5 else "")
    return (
        f"{record['kind'].upper()} {', '.join(record['hosts'])}: {record['spki_pin']} "
        f"({record['entry_type']} {record['log']} #{record['index']}; {names}; "
        f"issuer {record['issuer']}; not after {record['not_after']})"
    )


class _Printer:
    """Prints records as they are committed (JSON lines, or text), or, on a terminal, keeps
    them for a table at the end of the round."""

    def __init__(self, as_json: bool, tty: bool) -> None:
        self.as_json = as_json
        self.tty = tty
        self.kept: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def emit(self, record: dict[str, Any]) -> None:
        with self.lock:
            if self.as_json:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            elif self.tty:
                self.kept.append(record)
            else:
                click.echo(_line(record))

    def finish(self, summary: RoundSummary, logs: int) -> None:
        line = (
            f"{summary.entries} new entries from {logs} log(s): {summary.unexpected} unexpected, "
            f"{summary.pinned} pinned, {summary.log_errors} log error(s)"
        )
        if summary.malformed:
            line += f", {summary.malformed} unreadable certificate(s)"
        if self.as_json:
            return
        if self.tty:
            _print_table(self.kept)
            self.kept = []
        click.echo(line)


def _print_table(records: list[dict[str, Any]]) -> None:
    if not records:
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=True, highlight=False)
    table = Table()
    for name in ("Kind", "Hosts", "Names", "Log", "Entry", "Not after", "Issuer / reason"):
        table.add_column(name, overflow="fold")
    for r in records:
        style = _STYLES.get(r["kind"], "")
        if r["kind"] == "log_error":
            table.add_row(
                f"[{style}]log_error[/{style}]",
                "",
                "",
                escape(r["log"]),
                "",
                "",
                escape(r["reason"]),
            )
            continue
        table.add_row(
            f"[{style}]{r['kind']}[/{style}]",
            escape(", ".join(r["hosts"])),
            escape(", ".join(r["names"][:5]) + (" …" if len(r["names"]) > 5 else "")),
            escape(r["log"]),
            f"{r['entry_type']} #{r['index']}",
            escape(str(r["not_after"])),
            escape(str(r["issuer"])),
        )
    console.print(table)
    # Pins never go in a table cell: a folded pin cannot be copied.
    for r in records:
        if r["kind"] != "log_error":
            console.print(f"{r['kind']} {r['log']} #{r['index']}: {r['spki_pin']}")


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"certpin: {record.getMessage()}", err=True)


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Warnings (unreadable entries, webhook failures) go to stderr while the verb runs."""
    loggers = [logging.getLogger("certpin.ct"), logging.getLogger("certpin.monitor")]
    handler = _StderrHandler(logging.WARNING)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@contextlib.contextmanager
def _progress(*, enabled: bool) -> Iterator[Any]:
    """A progress bar per log on stderr when it is a terminal; yields the callback."""
    with progress_bars(enabled=enabled) as progress:
        if progress is None:
            yield None
            return
        tasks: dict[str, Any] = {}
        lock = threading.Lock()

        def update(info: LogInfo, done: int, total: int) -> None:
            with lock:
                task = tasks.get(info.url)
                if task is None:
                    task = tasks[info.url] = progress.add_task(info.url, total=total)
                progress.update(task, completed=done, total=total)

        yield update
