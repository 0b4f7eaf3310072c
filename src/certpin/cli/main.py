"""The ``certpin`` command: the verb group and `main`, which turns every outcome into an exit code.

Exit codes: `certpin.cli.exitcode.ExitCode` (the one table, docs/cli.md). `main` runs click with
``standalone_mode=False`` and maps exceptions to these codes itself, so it is callable in-process
(tests) and never prints a traceback for an expected error.

Python warnings of dependencies (e.g. cryptography's deprecation of a legacy root in the system
CA store) are not shown while a verb runs, unless the user asked for them with ``-W`` or
``PYTHONWARNINGS``: they are meant for developers, and a user can do nothing about them.

Every verb lives in a module of its group and is imported only when it runs or when ``--help``
lists it (`_VERBS`), so ``certpin pin FILE`` starts quickly: ``rich`` is imported only on a
terminal, ``cryptography`` only by verbs that parse certificates.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

import click

from certpin._errors import CertpinError
from certpin._version import __version__
from certpin.cli.exitcode import ExitCode
from certpin.cli.output import error

__all__ = ["cli", "main"]

#: verb name -> "module:attribute" of its click command, imported on first use.
_VERBS: dict[str, str] = {
    "pin": "certpin.cli.pins:pin_command",
    "check": "certpin.cli.pins:check_command",
    "keygen": "certpin.cli.lifecycle:keygen_command",
    "lint": "certpin.cli.lifecycle:lint_command",
    "inventory": "certpin.cli.lifecycle:inventory_command",
    "rotate": "certpin.cli.rotate:rotate_group",
    "monitor": "certpin.cli.monitor:monitor_command",
    "export": "certpin.cli.formats:export_command",
    "import": "certpin.cli.formats:import_command",
    "diff": "certpin.cli.diff:diff_command",
    "bundle": "certpin.cli.bundle:bundle_group",
    "tofu": "certpin.cli.tofu:tofu_group",
    "ct": "certpin.cli.ct:ct_group",
    "serve": "certpin.cli.serve:serve_command",
    "run": "certpin.cli.run:run_command",
}


class _Group(click.Group):
    """The root group: imports the module of a verb only when the verb is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _VERBS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):  # Defensive: a wrong _VERBS entry
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="certpin", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Certificate and public-key pinning: compute pins, check hosts against a policy."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (`ExitCode`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    with _dependency_warnings_hidden():
        try:
            result = cli.main(args=args, prog_name="certpin", standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            return ExitCode.INTERRUPTED
        except click.ClickException as exc:
            exc.show()
            return ExitCode.USAGE
        except CertpinError as exc:  # Defensive: verbs (`Verb.invoke`) translate their own
            error(str(exc))
            return ExitCode.USAGE
        except BrokenPipeError:  # `certpin pin … | head`: the reader went away; not an error.
            # Point stdout at devnull so the interpreter's final flush does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return ExitCode.OK
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
    return result if isinstance(result, int) else ExitCode.OK


@contextlib.contextmanager
def _dependency_warnings_hidden() -> Iterator[None]:
    """No raw ``…Warning:`` lines from dependencies on a user's terminal (see the module
    docstring); the filters are restored afterwards, for in-process callers."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
        yield
