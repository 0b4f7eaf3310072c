"""``certpin export`` and ``certpin import``: one policy, many client formats (docs/formats.md).

``--format`` names a platform format (`certpin.formats.FORMATS`): the one written by ``export``,
the one FILE is in for ``import``. Exit codes (`ExitCode`): 0 written (warnings, if any, on
stderr); 1 ``--strict`` and there were warnings (nothing written); 2 usage or input error (the
message names the file and line or key; a hostile or oversized FILE is an input error too, see
docs/formats.md "Hostile input").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.options import Verb, output_option
from certpin.cli.output import error, warn, write_output
from certpin.formats import FORMATS, ExportOptions, ImportOptions
from certpin.formats._common import one_line

__all__ = ["export_command", "import_command"]


def _format_option(help: str) -> Callable[[Any], Any]:
    """``-f/--format NAME`` -> ``fmt``: a platform format of docs/formats.md."""
    return click.option(
        "--format", "-f", "fmt", required=True, type=click.Choice(list(FORMATS)), help=help
    )


def _refused(warnings: tuple[str, ...], strict: bool) -> bool:
    """Print warnings to stderr; True when --strict makes them fatal."""
    for line in warnings:
        warn(line)
    if strict and warnings:
        error(f"{len(warnings)} warning(s) and --strict: nothing written")
        return True
    return False


@click.command("export", cls=Verb)
@_format_option("The format to write (docs/formats.md).")
@click.argument("policy_file", metavar="POLICY", type=click.Path(dir_okay=False))
@output_option()
@click.option(
    "--okhttp",
    type=click.Choice(["3", "4"]),
    help="OkHttp major version (okhttp-* formats; default 4). OkHttp 3 has no '**.' patterns.",
)
@click.option(
    "--cert",
    "certs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A pinned CA certificate file (PEM or DER) to carry (mobileconfig; repeatable).",
)
@click.option(
    "--identifier",
    metavar="ID",
    help="The profile's PayloadIdentifier (mobileconfig; default org.certpin.anchors).",
)
@click.option("--strict", is_flag=True, help="Fail (exit 1) when anything cannot be expressed.")
def export_command(
    fmt: str,
    policy_file: str,
    output: str | None,
    okhttp: str | None,
    certs: tuple[str, ...],
    identifier: str | None,
    strict: bool,
) -> int:
    """Export POLICY to another format; print what it cannot express on stderr.

    Exit status: 0 written; 1 --strict and something could not be expressed (nothing written);
    2 usage error or invalid policy/certificate.
    """
    from certpin.core.policy import Policy

    if okhttp is not None and not fmt.startswith("okhttp-"):
        raise click.UsageError("--okhttp only applies to the okhttp-kotlin and okhttp-java formats")
    if (certs or identifier) and fmt != "mobileconfig":
        raise click.UsageError("--cert and --identifier only apply to --format mobileconfig")
    policy = Policy.from_file(policy_file)
    ders: list[bytes] = []
    if certs:
        from certpin.core.sources import load_file

        for path in certs:
            found = [src.der for src in load_file(path) if src.kind == "certificate"]
            if not found:
                raise click.BadParameter(f"{path}: no certificate in the file", param_hint="--cert")
            ders += found
    options = ExportOptions(
        okhttp=int(okhttp or 4),
        certs=tuple(ders),
        identifier=identifier or ExportOptions.identifier,
    )
    result = FORMATS[fmt].export(policy, options)
    if _refused(result.warnings, strict):
        return ExitCode.FAILED
    write_output(result.text, output)
    return ExitCode.OK


@click.command("import", cls=Verb)
@_format_option("The format FILE is in (docs/formats.md).")
@click.argument("input_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@output_option("Write the policy here instead of stdout.", metavar="OUT.toml")
@click.option(
    "--domain",
    metavar="HOST",
    help="The host the pins are for, where FILE does not say (mobileconfig, hpkp).",
)
@click.option("--strict", is_flag=True, help="Fail (exit 1) when anything had to be translated.")
def import_command(
    fmt: str, input_file: str, output: str | None, domain: str | None, strict: bool
) -> int:
    """Read FILE in another format and write the certpin policy (TOML) it amounts to.

    Exit status: 0 written; 1 --strict and something had to be translated or left out
    (nothing written); 2 usage error or invalid FILE (the message names the line or key).
    """
    from certpin.core.toml import dump_policy

    fmt_ = FORMATS[fmt]
    try:
        # One byte over the format's cap is enough for its importer to refuse the file (naming
        # the cap): a huge file, or an endless one such as /dev/zero, is never read whole.
        with open(input_file, "rb") as stream:
            data = stream.read(fmt_.max_bytes + 1)
    except OSError as exc:
        raise click.FileError(input_file, hint=exc.strerror or str(exc)) from None
    result = fmt_.import_(data, input_file, ImportOptions(domain=domain))
    if _refused(result.warnings, strict):
        return ExitCode.FAILED
    header = [f"Imported by certpin from {input_file} ({fmt})."]
    header += [f"warning: {w}" for w in result.warnings]
    # The file name and the warnings quote the input: one line each, no control characters
    # (TOML forbids them in comments, and a newline would end the comment).
    text = dump_policy(result.policy, header="\n".join(one_line(line) for line in header))
    write_output(text, output)
    return ExitCode.OK
