"""The ``certpin`` command line: one thin verb per library feature.

Exit codes (the same table for every verb, see docs/cli.md):

    0  success (``check``: pins match, or the host is unpinned / its pins expired)
    1  pin mismatch (``check``: enforced or report-only), or the host is denied
    2  usage or input error: bad option, unreadable/invalid file, invalid policy or pin
    3  connection or TLS failure: refused, timeout, untrusted CA, host name mismatch, expired

`main` runs click with ``standalone_mode=False`` and maps exceptions to these codes itself, so it
is callable in-process (tests) and never prints a traceback for an expected error.

Imports are lazy: ``rich`` only on a terminal, ``cryptography`` (via certpin.core.sources) only for
verbs that parse certificates, so ``certpin pin FILE`` starts quickly.

Later verbs live in their own modules and are listed in `_LAZY_VERBS` (``name -> "module:attr"``);
they are imported only when invoked or when ``--help`` lists them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from certpin._errors import CertpinError
from certpin._version import __version__
from certpin.tls.fetch import DEFAULT_TIMEOUT, ConnectError, fetch_chain, format_target

if TYPE_CHECKING:
    from certpin.core.sources import PinSource
    from certpin.core.verdict import Verdict

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_USAGE",
    "cli",
    "main",
]

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3

DEFAULT_PORT = 443

#: verbs implemented in other modules, imported on first use: name -> "module:attribute".
_LAZY_VERBS: dict[str, str] = {
    "monitor": "certpin.cli.monitor:command",
    "serve": "certpin.cli.serve:serve_command",
    "keygen": "certpin.cli.lifecycle:keygen_command",
    "lint": "certpin.cli.lifecycle:lint_command",
    "rotate": "certpin.cli.rotate:rotate_group",
    "inventory": "certpin.cli.lifecycle:inventory_command",
    "export": "certpin.cli.formats:export_command",
    "import": "certpin.cli.formats:import_command",
    "bundle": "certpin.cli.bundle:bundle_group",
    "tofu": "certpin.cli.bundle:tofu_group",
}


class _Group(click.Group):
    """A click group that imports the verbs of `_LAZY_VERBS` only when they are needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_VERBS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _LAZY_VERBS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):  # Defensive: a wrong _LAZY_VERBS entry
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="certpin", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Certificate and public-key pinning: compute pins, check hosts against a policy."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (see the module docstring for the table)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="certpin", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except ConnectError as exc:  # before CertpinError: it is one, with its own exit code
        _error(str(exc))
        return EXIT_CONNECTION
    except CertpinError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # `certpin pin … | head`: the reader went away; not an error.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else EXIT_OK


def _error(message: str) -> None:
    click.echo(f"certpin: error: {message}", err=True)


# -- shared options -------------------------------------------------------------------------


def _check_host(host: str, text: str) -> None:
    from certpin.core.hosts import HostError, normalize_host

    try:
        normalize_host(host)
    except HostError as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None


def _servername(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        _check_host(value, value)
    return value


def _connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds allowed for the TCP connection and the TLS handshake.",
    )(func)
    func = click.option(
        "--servername",
        metavar="NAME",
        callback=_servername,
        help="Host name to send in SNI and verify the certificate for (default: HOST).",
    )(func)
    func = click.option(
        "--cafile",
        type=click.Path(exists=True, dir_okay=False),
        help="PEM file of trusted CA certificates (default: the system trust store).",
    )(func)
    return func


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


# -- pin ------------------------------------------------------------------------------------


@cli.command("pin")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--connect",
    metavar="HOST[:PORT]",
    help="Fetch the verified chain from a TLS server instead of reading files.",
)
@_connection_options
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the passphrase of encrypted private keys (first line).",
)
@click.option(
    "--password-env",
    metavar="VAR",
    help="Environment variable holding the passphrase of encrypted private keys.",
)
@click.option("--all-algorithms", is_flag=True, help="Also print sha384/ and sha512/ SPKI pins.")
@_json_option
def pin_command(
    paths: tuple[str, ...],
    connect: str | None,
    cafile: str | None,
    servername: str | None,
    timeout: float,
    password_file: str | None,
    password_env: str | None,
    all_algorithms: bool,
    as_json: bool,
) -> int:
    """Print the pins of certificates, keys and CSRs in PATHs, or of a server's chain.

    PATH may hold any number of PEM blocks (certificates, public keys, private keys, CSRs) or
    one DER object. With --connect, the chain shown is the one the server's certificate was
    *verified* with (RFC 7469 §2.6); SERVED says whether the server itself sent each one.
    """
    served: list[bool] | None = None
    if connect is not None:
        if paths:
            raise click.UsageError("give either PATHs or --connect, not both")
        if password_file or password_env:
            raise click.UsageError("--password-file/--password-env only apply to PATHs")
        sources, served = _pin_sources_from_server(connect, cafile, servername, timeout)
    else:
        if not paths:
            raise click.UsageError("give at least one PATH, or --connect HOST[:PORT]")
        if cafile or servername:
            raise click.UsageError("--cafile/--servername only apply with --connect")
        password = _read_password(password_file, password_env)
        from certpin.core.sources import load_file

        sources = [src for path in paths for src in load_file(path, password)]
    _print_sources(sources, served, all_algorithms=all_algorithms, as_json=as_json)
    return EXIT_OK


def _read_password(password_file: str | None, password_env: str | None) -> bytes | None:
    if password_file and password_env:
        raise click.UsageError("give --password-file or --password-env, not both")
    if password_file:
        try:
            with open(password_file, "rb") as fh:
                return fh.readline().rstrip(b"\r\n")
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="--password-file") from None
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise click.BadParameter(
                f"environment variable {password_env} is not set", param_hint="--password-env"
            )
        return os.fsencode(value)
    return None


def _pin_sources_from_server(
    target: str, cafile: str | None, servername: str | None, timeout: float
) -> tuple[list[PinSource], list[bool]]:
    from certpin.core.sources import load_sources

    host, port = parse_target(target)
    fetched = fetch_chain(host, port, cafile=cafile, servername=servername, timeout=timeout)
    label = format_target(host, port)
    sources = []
    for i, der in enumerate(fetched.verified):
        (src,) = load_sources(der, source=label)
        sources.append(_with_position(src, i))
    served_set = set(fetched.served)
    return sources, [der in served_set for der in fetched.verified]


def _with_position(src: PinSource, position: int) -> PinSource:
    return dataclasses.replace(src, position=position, line=None)


# -- check ----------------------------------------------------------------------------------


@cli.command("check")
@click.argument("target", metavar="HOST[:PORT]")
@click.option(
    "--policy",
    "policy_file",
    required=True,
    metavar="FILE",
    help="Pin policy (TOML or JSON).",
)
@_connection_options
@_json_option
def check_command(
    target: str,
    policy_file: str,
    cafile: str | None,
    servername: str | None,
    timeout: float,
    as_json: bool,
) -> int:
    """Connect to HOST[:PORT] (default port 443) and check its verified chain against a policy.

    The rule is looked up by the SNI name (--servername, default HOST). Exit status: 0 pins
    match, or the host is unpinned or its pins expired; 1 pins do not match (also in
    report-only mode) or the host is denied; 2 bad policy or usage; 3 connection/TLS failure.
    """
    from certpin.core.policy import Policy
    from certpin.core.verdict import VerdictStatus, verdict

    host, port = parse_target(target)
    policy = Policy.from_file(policy_file)  # PolicyError -> exit 2 before any connection
    sni = servername or host
    fetched = fetch_chain(host, port, cafile=cafile, servername=sni, timeout=timeout)
    result = verdict(sni, fetched.verified, policy, dt.datetime.now(dt.UTC))
    served_set = set(fetched.served)
    served_flags = [der in served_set for der in fetched.verified]
    if as_json:
        _print_json(_verdict_json(result, host, port, served_flags))
    else:
        _print_verdict(result, format_target(host, port), served_flags)
    passing = {VerdictStatus.OK, VerdictStatus.UNPINNED, VerdictStatus.EXPIRED}
    return EXIT_OK if result.status in passing else EXIT_MISMATCH


def _mode(result: Verdict) -> str | None:
    if result.rule is None:
        return None
    return "enforce" if result.rule.enforce else "report-only"


_HEADLINES = {
    "ok": "OK: the verified chain matches a pin",
    "failed": "FAILED: the verified chain matches no pin",
    "unpinned": "UNPINNED: no pin rule covers this host; CA validation only",
    "expired": "EXPIRED: the host's pins have expired; CA validation only",
    "denied": "DENIED: no pin rule covers this host and the policy denies unpinned hosts",
}


def _print_verdict(result: Verdict, target: str, served: list[bool]) -> None:
    status = result.status.value
    mode = _mode(result)
    headline = _HEADLINES[status]
    if status == "failed" and mode == "report-only":
        headline += " (report-only: clients would connect and send a report)"
    lines = [
        headline,
        f"  host:     {result.host} ({target})",
        f"  status:   {status}",
        f"  reason:   {result.reason}",
    ]
    if result.rule is not None:
        lines.append(f"  rule:     {result.rule.pattern}")
        lines.append(f"  mode:     {mode}")
    if result.matched_pin is not None:
        lines.append(f"  matched:  {result.matched_pin}")
    lines.append("  verified chain (leaf first):")
    for entry, was_served in zip(result.chain, served, strict=True):
        mark = "" if was_served else "  [not sent by the server]"
        lines.append(f"    {entry.position}  {entry.pin}  {entry.subject}{mark}")
    if result.rule is not None:
        lines.append("  expected pins:")
        for pin in result.expected_pins:
            # Display only (which certificate a pin names); the decision is the verdict's.
            where = [str(e.position) for e in result.chain if pin.matches(e.der)]
            note = f"  (chain position {', '.join(where)})" if where else ""
            lines.append(f"    {pin}{note}")
    click.echo("\n".join(lines))


def _verdict_json(result: Verdict, host: str, port: int, served: list[bool]) -> dict[str, Any]:
    from certpin.core.sources import load_sources

    chain = []
    for entry, was_served in zip(result.chain, served, strict=True):
        (src,) = load_sources(entry.der, source=format_target(host, port))
        item = _source_json(_with_position(src, entry.position))
        item["served"] = was_served
        chain.append(item)
    return {
        "host": result.host,
        "address": host,
        "port": port,
        "status": result.status.value,
        "allowed": result.allowed,
        "mode": _mode(result),
        "rule": None if result.rule is None else result.rule.pattern,
        "matched_pin": None if result.matched_pin is None else str(result.matched_pin),
        "reason": result.reason,
        "chain": chain,
        "expected_pins": [str(p) for p in result.expected_pins],
    }


# -- connecting -----------------------------------------------------------------------------


def parse_target(text: str) -> tuple[str, int]:
    """`certpin.tls.fetch.parse_target`, with its errors as click usage errors (exit code 2)."""
    from certpin.tls.fetch import parse_target as parse

    try:
        return parse(text, DEFAULT_PORT)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# -- output ---------------------------------------------------------------------------------

_COLUMNS = ("SOURCE", "POS", "KIND", "KEY", "SUBJECT", "ISSUER", "NOT_AFTER", "PIN", "CERT_SHA256")


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _source_json(src: PinSource, all_algorithms: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": src.source,
        "position": src.position,
        "line": src.line,
        "kind": src.kind,
        "key_type": src.key_type,
        "subject": src.subject,
        "issuer": src.issuer,
        "not_before": _iso(src.not_before),
        "not_after": _iso(src.not_after),
        "is_ca": src.is_ca,
        "pin": str(src.pin),
        "cert_sha256": None if src.cert_sha256 is None else str(src.cert_sha256),
    }
    if all_algorithms:
        out["pins"] = {alg: str(src.pin_for(alg)) for alg in ("sha256", "sha384", "sha512")}
    return out


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _print_sources(
    sources: list[PinSource], served: list[bool] | None, *, all_algorithms: bool, as_json: bool
) -> None:
    if as_json:
        items = []
        for i, src in enumerate(sources):
            item = _source_json(src, all_algorithms)
            if served is not None:
                item["served"] = served[i]
            items.append(item)
        _print_json(items)
        return
    columns = list(_COLUMNS)
    if all_algorithms:
        columns[columns.index("PIN") + 1 : columns.index("PIN") + 1] = ["PIN_SHA384", "PIN_SHA512"]
    if served is not None:
        columns.append("SERVED")
    rows = []
    for i, src in enumerate(sources):
        row = {
            "SOURCE": src.source,
            "POS": str(src.position),
            "KIND": src.kind,
            "KEY": src.key_type,
            "SUBJECT": src.subject or "-",
            "ISSUER": src.issuer or "-",
            "NOT_AFTER": _iso(src.not_after) or "-",
            "PIN": str(src.pin),
            "PIN_SHA384": str(src.pin_for("sha384")),
            "PIN_SHA512": str(src.pin_for("sha512")),
            "CERT_SHA256": str(src.cert_sha256) if src.cert_sha256 else "-",
            "SERVED": "-" if served is None else ("yes" if served[i] else "no"),
        }
        rows.append([row[c] for c in columns])
    _print_table(columns, rows)


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    """Tab-separated lines, header first, when stdout is not a terminal (``cut -f``,
    ``awk -F'\\t'``); on a terminal one block per row. Neither ever wraps or truncates a pin:
    a 9-column table does not fit a terminal without folding the pins."""
    if not sys.stdout.isatty():
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(cell.replace("\t", " ") for cell in row))
        return
    from rich.console import Console
    from rich.markup import escape

    # soft_wrap: rich never inserts line breaks; a pin stays one copyable string.
    console = Console(soft_wrap=True, highlight=False)
    width = max(len(c) for c in columns)
    for i, row in enumerate(rows):
        cells = dict(zip(columns, row, strict=True))
        if i:
            console.print()
        title = f"{cells.pop('SOURCE')} #{cells.pop('POS')}  {cells.pop('KIND')}"
        console.print(f"[bold]{escape(title)}[/bold]")
        for name, value in cells.items():
            style = "bold green" if name == "PIN" else "default"
            label = name.lower().replace("_", " ").ljust(width)
            console.print(f"  [dim]{label}[/dim]  [{style}]{escape(value)}[/{style}]")
