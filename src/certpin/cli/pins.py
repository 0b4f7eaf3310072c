"""``certpin pin`` (the pins of files or of a server's verified chain) and ``certpin check`` (a
server's verified chain against a policy): docs/cli.md.

Thin functions over `certpin.core.sources`, `certpin.tls.fetch` and `certpin.verdict`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from certpin.cli.exitcode import ExitCode, for_verdict
from certpin.cli.options import (
    Verb,
    apply_options,
    cafile_option,
    connect_option,
    json_option,
    parse_target,
    password_options,
    policy_option,
    read_password,
    servername_option,
    timeout_option,
)
from certpin.cli.output import print_json

if TYPE_CHECKING:
    from certpin.core.sources import PinSource
    from certpin.core.verdict import Verdict
    from certpin.tls.fetch import FetchedChain

__all__ = ["check_command", "pin_command"]


def _connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--cafile``, ``--servername``, ``--timeout``: how ``pin --connect`` and ``check``
    connect."""
    return apply_options(func, [cafile_option(), servername_option, timeout_option()])


# -- pin ----------------------------------------------------------------------------------------


@click.command("pin", cls=Verb)
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
@connect_option()
@_connection_options
@password_options("encrypted private keys", must_exist=True)
@click.option("--all-algorithms", is_flag=True, help="Also print sha384/ and sha512/ SPKI pins.")
@json_option
def pin_command(
    paths: tuple[str, ...],
    connect: tuple[str, int] | None,
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
        fetched = _fetch(connect, cafile, servername, timeout)
        sources, served = _chain_sources(fetched.verified, fetched), _served(fetched)
    else:
        if not paths:
            raise click.UsageError("give at least one PATH, or --connect HOST[:PORT]")
        if cafile or servername:
            raise click.UsageError("--cafile/--servername only apply with --connect")
        password = read_password(password_file, password_env)
        from certpin.core.sources import load_file

        sources = [src for path in paths for src in load_file(path, password)]
    _print_sources(sources, served, all_algorithms=all_algorithms, as_json=as_json)
    return ExitCode.OK


def _fetch(
    target: tuple[str, int], cafile: str | None, servername: str | None, timeout: float
) -> FetchedChain:
    from certpin.tls.fetch import fetch_chain

    host, port = target
    return fetch_chain(host, port, cafile=cafile, servername=servername, timeout=timeout)


def _served(fetched: FetchedChain) -> list[bool]:
    """For each certificate of the verified chain: did the server send it?"""
    sent = set(fetched.served)
    return [der in sent for der in fetched.verified]


def _chain_sources(chain: Sequence[bytes], fetched: FetchedChain) -> list[PinSource]:
    """A verified chain as pin sources, named ``host:port``, numbered from the leaf."""
    from certpin.core.sources import load_sources
    from certpin.tls.fetch import format_target

    label = format_target(fetched.host, fetched.port)
    sources = []
    for i, der in enumerate(chain):
        (src,) = load_sources(der, source=label)
        sources.append(dataclasses.replace(src, position=i, line=None))
    return sources


# -- check --------------------------------------------------------------------------------------


def _revocation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-revocation`` and ``--log-list``: the revocation and SCT report of ``check``."""
    return apply_options(
        func,
        [
            click.option(
                "--no-revocation",
                is_flag=True,
                help="Skip the revocation checks (stapled OCSP, OCSP responder, CRL).",
            ),
            click.option(
                "--log-list",
                type=click.Path(dir_okay=False),
                metavar="FILE",
                help="CT log list (v3 log_list.json) to name the logs of the leaf's SCTs and "
                "verify their signatures.",
            ),
        ],
    )


@click.command("check", cls=Verb)
@click.argument("target", metavar="HOST[:PORT]", callback=lambda _c, _p, v: parse_target(v))
@policy_option(required=True)
@_connection_options
@_revocation_options
@json_option
def check_command(
    target: tuple[str, int],
    policy_file: str,
    cafile: str | None,
    servername: str | None,
    timeout: float,
    no_revocation: bool,
    log_list: str | None,
    as_json: bool,
) -> int:
    """Connect to HOST[:PORT] (default port 443) and check its verified chain against a policy.

    The rule is looked up by the SNI name (--servername, default HOST). Exit status: 0 pins
    match, or the host is unpinned or its pins expired; 1 pins do not match (also in
    report-only mode), the host is denied, or a certificate a pin covers is revoked; 2 bad
    policy or usage; 3 connection/TLS failure.

    Also reports each certificate's revocation status (the stapled OCSP response, else the
    OCSP responder, else the CRL; --no-revocation skips it) and the leaf's embedded SCTs.
    """
    from certpin.core.policy import Policy
    from certpin.core.verdict import verdict
    from certpin.lifecycle.sct import embedded_scts

    policy = Policy.from_file(policy_file)  # PolicyError -> exit 2 before any connection
    logs = _load_log_list(log_list)
    sni = servername or target[0]
    fetched = _fetch(target, cafile, sni, timeout)
    now = dt.datetime.now(dt.UTC)
    result = verdict(sni, fetched.verified, policy, now)
    revocations = None
    if not no_revocation:
        from certpin.lifecycle.staple import check_live

        revocations = check_live(
            fetched.host, fetched.port, sni, fetched.verified, now, timeout=timeout
        )
    alerts = _revocation_alerts(result, revocations)
    chain = fetched.verified
    scts = embedded_scts(chain[0], chain[1] if len(chain) > 1 else None, logs)
    if as_json:
        document = _verdict_json(result, fetched)
        document["revocation"] = None if revocations is None else [r.to_json() for r in revocations]
        document["revocation_alerts"] = alerts
        document["scts"] = scts.to_json()
        print_json(document)
    else:
        _print_verdict(result, fetched)
        _print_revocation(revocations, alerts, scts)
    code = for_verdict(result)
    return ExitCode.FAILED if alerts else code


def _load_log_list(path: str | None) -> Any:
    if path is None:
        return None
    from certpin.lifecycle.ct.loglist import load_log_list

    return load_log_list(path)  # LogListError (a ConfigurationError) -> exit 2


def _revocation_alerts(result: Verdict, revocations: Sequence[Any] | None) -> list[str]:
    """An alert per revoked certificate that a pin of the host's rule covers."""
    if revocations is None or result.rule is None:
        return []
    from certpin.lifecycle.revocation import alert

    found = (alert(r, result.rule.all_pins) for r in revocations)
    return [line for line in found if line is not None]


def _print_revocation(revocations: Sequence[Any] | None, alerts: list[str], scts: Any) -> None:
    lines = []
    if revocations is None:
        lines.append("  revocation: not checked (--no-revocation)")
    else:
        lines.append("  revocation:")
        for rev in revocations:
            lines.append(f"    {rev.position}  {rev.status}  {rev.reason}")
            lines += [f"         tried: {t}" for t in rev.tried if t != rev.reason]
    lines.append(f"  SCTs:     {scts.summary()}")
    lines += [f"    {s.reason} ({s.timestamp:%Y-%m-%d})" for s in scts.scts]
    lines += [f"ALERT: {line}" for line in alerts]
    click.echo("\n".join(lines))


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


def _print_verdict(result: Verdict, fetched: FetchedChain) -> None:
    from certpin.tls.fetch import format_target

    status = result.status.value
    mode = _mode(result)
    headline = _HEADLINES[status]
    if status == "failed" and mode == "report-only":
        headline += " (report-only: clients would connect and send a report)"
    lines = [
        headline,
        f"  host:     {result.host} ({format_target(fetched.host, fetched.port)})",
        f"  status:   {status}",
        f"  reason:   {result.reason}",
    ]
    if result.rule is not None:
        lines.append(f"  rule:     {result.rule.pattern}")
        lines.append(f"  mode:     {mode}")
    if result.matched_pin is not None:
        lines.append(f"  matched:  {result.matched_pin}")
    lines.append("  verified chain (leaf first):")
    for entry, was_served in zip(result.chain, _served(fetched), strict=True):
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


def _verdict_json(result: Verdict, fetched: FetchedChain) -> dict[str, Any]:
    chain = []
    verified = [entry.der for entry in result.chain]
    for src, was_served in zip(_chain_sources(verified, fetched), _served(fetched), strict=True):
        item = _source_json(src)
        item["served"] = was_served
        chain.append(item)
    return {
        "host": result.host,
        "address": fetched.host,
        "port": fetched.port,
        "status": result.status.value,
        "allowed": result.allowed,
        "mode": _mode(result),
        "rule": None if result.rule is None else result.rule.pattern,
        "matched_pin": None if result.matched_pin is None else str(result.matched_pin),
        "reason": result.reason,
        "chain": chain,
        "expected_pins": [str(p) for p in result.expected_pins],
    }


# -- output -------------------------------------------------------------------------------------

_COLUMNS = ("SOURCE", "POS", "KIND", "KEY", "SUBJECT", "ISSUER", "NOT_AFTER", "PIN", "CERT_SHA256")


def _source_json(src: PinSource, all_algorithms: bool = False) -> dict[str, Any]:
    from certpin.core.times import iso

    out: dict[str, Any] = {
        "source": src.source,
        "position": src.position,
        "line": src.line,
        "kind": src.kind,
        "key_type": src.key_type,
        "subject": src.subject,
        "issuer": src.issuer,
        "not_before": iso(src.not_before),
        "not_after": iso(src.not_after),
        "is_ca": src.is_ca,
        "pin": str(src.pin),
        "cert_sha256": None if src.cert_sha256 is None else str(src.cert_sha256),
    }
    if all_algorithms:
        out["pins"] = {alg: str(src.pin_for(alg)) for alg in ("sha256", "sha384", "sha512")}
    return out


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
        print_json(items)
        return
    columns = list(_COLUMNS)
    if all_algorithms:
        columns[columns.index("PIN") + 1 : columns.index("PIN") + 1] = ["PIN_SHA384", "PIN_SHA512"]
    if served is not None:
        columns.append("SERVED")
    from certpin.core.times import iso

    rows = []
    for i, src in enumerate(sources):
        row = {
            "SOURCE": src.source,
            "POS": str(src.position),
            "KIND": src.kind,
            "KEY": src.key_type,
            "SUBJECT": src.subject or "-",
            "ISSUER": src.issuer or "-",
            "NOT_AFTER": iso(src.not_after) or "-",
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
