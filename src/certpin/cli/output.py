"""How every verb writes: results to stdout, ``certpin: …`` lines to stderr, files with ``-o``."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

__all__ = ["error", "note", "print_json", "progress_bars", "warn", "write_output"]


def error(message: str) -> None:
    """``certpin: error: …`` on stderr (the verb then exits non-zero)."""
    click.echo(f"certpin: error: {message}", err=True)


def warn(message: str) -> None:
    """``certpin: warning: …`` on stderr."""
    click.echo(f"certpin: warning: {message}", err=True)


def note(message: str) -> None:
    """``certpin: …`` on stderr: what was written, what was skipped."""
    click.echo(f"certpin: {message}", err=True)


def print_json(value: Any) -> None:
    """One JSON document on stdout, indented, non-ASCII kept as is."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def write_output(text: str, output: str | None, *, exclusive: bool = False) -> None:
    """`text` to stdout (`output` None or ``-``), or to the file `output`.

    Args:
        exclusive: refuse to replace an existing file (``rotate next``: earlier versions stay
            as they are deployed).

    Raises:
        click.FileError: the file cannot be written (exit code 2), naming it.
    """
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with Path(output).open("x" if exclusive else "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise click.FileError(output, hint=exc.strerror or str(exc)) from None


@contextlib.contextmanager
def progress_bars(*, enabled: bool) -> Iterator[Any]:
    """Rich progress bars on stderr (a task's description, its bar, done/total), cleared at the
    end; yields the ``rich.progress.Progress``, or None when `enabled` is False or stderr is not
    a terminal (scripts, ``--json``)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        yield progress
