"""``certpin diff A B``: how two pinning configurations differ, host by host (docs/cli.md).

A and B are any input `certpin.cli.formats.load_input` reads: a certpin policy, a file of any
import format (detected from the content), an ``.apk`` or an ``.ipa``. The comparison is
`certpin.lifecycle.diff.diff_policies`. Exit codes (`ExitCode`): 0 the same, 1 different, 2 an
input cannot be read (the message names the file).
"""

from __future__ import annotations

import sys

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.formats import Loaded, load_input
from certpin.cli.options import Verb, json_option
from certpin.cli.output import print_json, warn

__all__ = ["diff_command"]


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) or "(none)"
    if isinstance(value, dict):
        lines = [f"{slot}: {', '.join(pins) or '-'}" for slot, pins in value.items() if pins]
        return "\n".join(lines) or "(none)"
    return str(value)


@click.command("diff", cls=Verb)
@click.argument("first", metavar="A", type=click.Path(exists=True, dir_okay=False))
@click.argument("second", metavar="B", type=click.Path(exists=True, dir_okay=False))
@json_option
def diff_command(first: str, second: str, as_json: bool) -> int:
    """Compare the pinning of A and B host by host: pins, slots, subdomains, expiry, enforcement.

    A and B: certpin policies, files in any import format (detected from the content), .apk or
    .ipa apps. Exit status: 0 the same, 1 different, 2 an input cannot be read.
    """
    from certpin.lifecycle.diff import diff_policies

    loaded: list[Loaded] = []
    for path in (first, second):
        item = load_input(path)
        if not as_json:
            for line in item.warnings:
                warn(line)
        loaded.append(item)
    a, b = loaded
    found = diff_policies(a.policy, b.policy)
    code = ExitCode.FAILED if found else ExitCode.OK
    if as_json:
        print_json(
            {
                "a": {"file": first, "format": a.fmt, "import_warnings": list(a.warnings)},
                "b": {"file": second, "format": b.fmt, "import_warnings": list(b.warnings)},
                "same": not found,
                "differences": [d.to_json() for d in found],
                "exit_code": int(code),
            }
        )
        return code
    summary = f"{first} ({a.fmt}) and {second} ({b.fmt}): " + (
        "the same pinning" if not found else f"{len(found)} difference(s)"
    )
    if not found:
        click.echo(summary)
        return code
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console(soft_wrap=True, highlight=False)
        table = Table(show_lines=True)
        for name in ("Host", "Differs in", "A", "B"):
            table.add_column(name, overflow="fold")
        for d in found:
            table.add_row(
                escape(d.host),
                d.kind,
                escape(_text(d.a) if d.a_rule is None else f"[{d.a_rule}]\n{_text(d.a)}"),
                escape(_text(d.b) if d.b_rule is None else f"[{d.b_rule}]\n{_text(d.b)}"),
            )
        console.print(table)
        console.print(escape(summary))
        return code
    for d in found:
        click.echo(f"{d.host}  {d.kind}")
        for side, value, rule in (("A", d.a, d.a_rule), ("B", d.b, d.b_rule)):
            where = (
                f" (rule {rule})"
                if rule is not None and d.kind not in ("host", "subdomains")
                else ""
            )
            text = _text(value).replace("\n", "\n       ")
            click.echo(f"  {side}{where}: {text}")
    click.echo(summary)
    return code
