"""``certpin tofu …``: the trust-on-first-use store (docs/dynamic.md).

Thin functions over `certpin.dynamic.tofu.KnownPins`. Exit codes (`ExitCode`): 0 success; 1
``tofu forget`` found nothing; 2 usage or input error; 3 connection/TLS failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.options import (
    Verb,
    cafile_option,
    json_option,
    parse_target,
    port_option,
    timeout_option,
)
from certpin.cli.output import error

if TYPE_CHECKING:
    from certpin.dynamic import KnownPins

__all__ = ["tofu_group"]


def _store(path: str | None, *, match_issuer: bool = False) -> KnownPins:
    """The known-pins file: ``--file``, else $CERTPIN_KNOWN_PINS, else the user's default."""
    from certpin.dynamic import KnownPins

    path = path or os.environ.get("CERTPIN_KNOWN_PINS")
    path = path or str(Path("~/.config/certpin/known_pins.json").expanduser())
    return KnownPins(path, match_issuer=match_issuer)


_file_option = click.option(
    "--file",
    "store",
    default=None,
    help="Known-pins file (default: $CERTPIN_KNOWN_PINS or ~/.config/certpin/known_pins.json).",
)


def _target(text: str) -> tuple[str, int | None]:
    """``HOST[:PORT]``, or ``HOST:*`` (port None: the record asyncio clients use)."""
    if text.endswith(":*"):
        return text[:-2], None
    return parse_target(text)


@click.group("tofu")
def tofu_group() -> None:
    """The trust-on-first-use store: list, accept a new key, forget a host."""


@tofu_group.command("list", cls=Verb)
@_file_option
@json_option
def tofu_list(store: str | None, as_json: bool) -> None:
    """List recorded hosts and their pins."""
    entries = _store(store).entries()
    if as_json:
        click.echo(json.dumps({e.key: e.to_json() for e in entries}, indent=2))
        return
    for e in entries:
        pins = " ".join(str(p) for p in e.pins + e.issuer_pins)
        click.echo(f"{e.key}\t{e.first_seen}\t{pins}")


@tofu_group.command("accept", cls=Verb)
@click.argument("target", metavar="HOST[:PORT]")
@_file_option
@cafile_option()
@timeout_option()
@click.option("--match-issuer", is_flag=True, help="Also record the issuing CA's pin.")
@port_option("--connect-port", 443, "Port to connect to for a HOST:* record (the asyncio key).")
def tofu_accept(
    target: str,
    store: str | None,
    cafile: str | None,
    timeout: float,
    match_issuer: bool,
    connect_port: int,
) -> None:
    """Connect to HOST (CA-verified) and record its current key, replacing the old record.

    HOST:* replaces the port-less record asyncio clients use (connecting to --connect-port).
    """
    from certpin.tls.fetch import fetch_chain

    host, port = _target(target)
    chain = fetch_chain(host, port or connect_port, cafile=cafile, timeout=timeout).verified
    entry = _store(store, match_issuer=match_issuer).record(host, port, tuple(chain), replace=True)
    click.echo(
        f"{entry.key}: now trusting {' '.join(str(p) for p in entry.pins + entry.issuer_pins)}"
    )


@tofu_group.command("forget", cls=Verb)
@click.argument("target", metavar="HOST[:PORT]")
@_file_option
def tofu_forget(target: str, store: str | None) -> int:
    """Forget HOST's record: the next connection is a first use again."""
    host, port = _target(target)
    if not _store(store).forget(host, port):
        error(f"{target}: not in the known-pins file")
        return ExitCode.FAILED
    click.echo(f"forgot {target}")
    return ExitCode.OK
