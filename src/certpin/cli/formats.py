"""``certpin export`` and ``certpin import``: one policy, many client formats (docs/formats.md).

``--format`` names a platform format (`certpin.formats.FORMATS`): the one written by ``export``,
the one FILE is in for ``import``. Without it, ``import`` detects the format from the content
(`certpin.formats.detect`), and also reads a built app (``.apk``, ``.ipa``: the configuration
the app ships, `certpin.formats._apps`). `load_input` is that reading, shared with ``lint`` and
``diff``, which take any of these inputs as well as a certpin policy. Exit codes (`ExitCode`):
0 written (warnings, if any, on stderr); 1 ``--strict`` and there were warnings (nothing
written); 2 usage or input error (the message names the file and line or key; a hostile or
oversized FILE is an input error too, see docs/formats.md "Hostile input").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.options import Verb, output_option
from certpin.cli.output import error, note, warn, write_output
from certpin.formats import FORMATS, ExportOptions, FormatError, ImportOptions
from certpin.formats._common import one_line

if TYPE_CHECKING:
    from certpin.core.policy import Policy

__all__ = ["Loaded", "export_command", "import_command", "load_input"]


def _format_option(help: str, *, required: bool = True) -> Callable[[Any], Any]:
    """``-f/--format NAME`` -> ``fmt``: a platform format of docs/formats.md."""
    return click.option(
        "--format", "-f", "fmt", required=required, type=click.Choice(list(FORMATS)), help=help
    )


@dataclass(frozen=True)
class Loaded:
    """A policy read from any input `load_input` takes.

    Attributes:
        policy: the policy.
        warnings: what the import had to translate or leave out (none for a certpin policy).
        fmt: the input's format: a `FORMATS` name, ``"certpin"``, ``"apk"`` or ``"ipa"``.
        detected: the format was detected from the content (no ``--format``).
    """

    policy: Policy
    warnings: tuple[str, ...]
    fmt: str
    detected: bool


def _read(path: str, limit: int) -> bytes:
    """At most `limit` bytes of `path`: a huge or endless file is never read whole."""
    try:
        with open(path, "rb") as stream:
            return stream.read(limit)
    except OSError as exc:
        raise click.FileError(path, hint=exc.strerror or str(exc)) from None


def load_input(
    path: str,
    fmt: str | None = None,
    *,
    domain: str | None = None,
    policy_ok: bool = True,
) -> Loaded:
    """The policy in `path`: a certpin policy (TOML/JSON), a file in an import format
    (`fmt`, or detected from the content), or a built app (``.apk``, ``.ipa``).

    A ``.toml`` or ``.json`` file is read as a certpin policy (`Policy.from_file`, with its
    messages), as every verb always did.

    Raises:
        click.FileError: the file cannot be read.
        FormatError: the format cannot be told, or the file is invalid in it (naming the file).
        PolicyError: an invalid certpin policy.
        click.UsageError: a certpin policy where one is not wanted (``policy_ok=False``).
    """
    from certpin._errors import PolicyError
    from certpin.core.policy import Policy
    from certpin.formats._apps import MAX_APP_BYTES, import_app
    from certpin.formats._detect import MAX_DETECT_BYTES, detect

    options = ImportOptions(domain=domain)
    if fmt is not None:
        # One byte over the format's cap is enough for its importer to refuse the file (naming
        # the cap).
        result = FORMATS[fmt].import_(_read(path, FORMATS[fmt].max_bytes + 1), path, options)
        return Loaded(result.policy, result.warnings, fmt, False)
    if policy_ok and Path(path).suffix.lower() in (".toml", ".json"):
        return Loaded(Policy.from_file(path), (), "certpin", False)
    data = _read(path, MAX_DETECT_BYTES + 1)
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        data = _read(path, MAX_APP_BYTES + 1)
    try:
        found = detect(data, path)
    except FormatError as unknown:
        if not policy_ok or data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise
        # What these verbs always read: a certpin policy, here in a file of another name (a
        # policy without any rule yet has nothing detection recognises).
        try:
            return Loaded(Policy.from_file(path), (), "certpin", False)
        except PolicyError:
            raise unknown from None
    if found == "certpin":
        if not policy_ok:
            raise click.UsageError(f"{path} is a certpin policy already: nothing to import")
        return Loaded(Policy.from_file(path), (), found, True)
    if found in ("apk", "ipa"):
        result = import_app(data, path, options)
    elif found not in FORMATS:
        raise FormatError(f"looks like {found}, which this certpin cannot import", source=path)
    else:
        result = FORMATS[found].import_(data, path, options)
    return Loaded(result.policy, result.warnings, found, True)


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
@_format_option(
    "The format FILE is in (docs/formats.md). Default: detected from the content; an .apk or "
    ".ipa is read as the app it is.",
    required=False,
)
@click.argument("input_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@output_option("Write the policy here instead of stdout.", metavar="OUT.toml")
@click.option(
    "--domain",
    metavar="HOST",
    help="The host the pins are for, where FILE does not say (mobileconfig, hpkp).",
)
@click.option("--strict", is_flag=True, help="Fail (exit 1) when anything had to be translated.")
def import_command(
    fmt: str | None, input_file: str, output: str | None, domain: str | None, strict: bool
) -> int:
    """Read FILE in another format and write the certpin policy (TOML) it amounts to.

    FILE may be a configuration file of any format below (detected when --format is not
    given) or a built app: an Android .apk or an iOS .ipa.

    Exit status: 0 written; 1 --strict and something had to be translated or left out
    (nothing written); 2 usage error or invalid FILE (the message names the line or key).
    """
    from certpin.core.toml import dump_policy

    loaded = load_input(input_file, fmt, domain=domain, policy_ok=False)
    if loaded.detected:
        note(f"{input_file}: read as {loaded.fmt} (detected from the content)")
    if _refused(loaded.warnings, strict):
        return ExitCode.FAILED
    header = [f"Imported by certpin from {input_file} ({loaded.fmt})."]
    header += [f"warning: {w}" for w in loaded.warnings]
    # The file name and the warnings quote the input: one line each, no control characters
    # (TOML forbids them in comments, and a newline would end the comment).
    text = dump_policy(loaded.policy, header="\n".join(one_line(line) for line in header))
    write_output(text, output)
    return ExitCode.OK
