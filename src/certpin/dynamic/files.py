"""Which files a bundle host serves: one rule for `certpin bundle serve` and the collector's
``/bundles/`` mount (``certpin serve --bundles DIR``).

A bundle directory holds signed bundles, and often more that is not for the network: a ``.git``
checkout, the ``.lock`` of the publishing step, editors' temporary files, symlinks into the rest
of the disk. Only *bundle files* are served: a request names one when

* its path, percent-decoded, is names joined by single ``/``: no empty name (``//``), no name
  starting with ``.`` (dotfiles, dot-directories, ``.`` and ``..``), no ``\\`` (a separator on
  Windows) and no NUL — judged as sent, before any normalisation that could turn an odd path
  into a served one;
* the file it names, with every symlink resolved, is inside the directory, is a regular file
  (not a directory, FIFO or device), and no name of its resolved path below the directory starts
  with ``.`` either (a symlink ``pins.jws`` → ``.git/config`` is still ``.git/config``).

Anything else is "not found", the same answer as a missing file, so a client cannot tell what
exists.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from pathlib import Path

__all__ = ["bundle_file", "bundle_file_for_target"]


def bundle_file(directory: str | os.PathLike[str], path: str) -> Path | None:
    """The file of `directory` that the percent-decoded URL `path` names, if it is a bundle file.

    Args:
        directory: the bundle directory.
        path: the request's decoded path below the directory's URL (``/pins.jws`` or
            ``pins.jws``; one leading ``/`` is allowed).

    Returns:
        The resolved path of the file to serve, or None (answer 404).
    """
    names = (path[1:] if path.startswith("/") else path).split("/")
    if "\\" in path or "\x00" in path or any(not n or n.startswith(".") for n in names):
        return None
    try:
        base = Path(directory).resolve(strict=True)
        real = base.joinpath(*names).resolve(strict=True)
        mode = real.stat().st_mode
    # OSError: missing, too long, not a directory on the way, a symlink loop (3.13); ValueError:
    # a name the file system cannot encode; RuntimeError: a symlink loop (3.11, 3.12).
    except (OSError, ValueError, RuntimeError):
        return None
    if not real.is_relative_to(base) or not stat.S_ISREG(mode):
        return None
    if any(name.startswith(".") for name in real.relative_to(base).parts):
        return None
    return real


def bundle_file_for_target(directory: str | os.PathLike[str], target: str) -> Path | None:
    """`bundle_file` for a raw HTTP request target (``/pins.jws?x=1``): the query and fragment
    are dropped and the path percent-decoded as UTF-8 (a path that is not UTF-8 names no file).
    """
    raw = target.split("?", 1)[0].split("#", 1)[0]
    try:
        path = urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    return bundle_file(directory, path)
