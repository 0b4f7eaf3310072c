"""Crash-safe file writes and cross-process locks for certpin's small state files.

Portable: nothing POSIX-only is imported at module level (``fcntl`` does not exist on Windows,
where ``msvcrt`` locks instead), so `KnownPins` and `DynamicPolicy` import everywhere.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "file_lock"]


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a mix.

    Write a temporary file in the same directory, fsync it, ``os.replace`` it over the target
    (atomic on POSIX), then fsync the directory so the rename survives a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sys.platform != "win32":  # Windows cannot open a directory; its rename is journaled
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) across processes, for read-modify-write.

    POSIX: ``fcntl.flock``; Windows: ``msvcrt.locking`` on the file's first byte. The lock file is
    separate from the data file: the data file is replaced by rename, and a lock held on a
    replaced inode would protect nothing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


if sys.platform == "win32":  # pragma: no cover - Defensive: CI runs on Linux

    def _lock(fd: int) -> None:
        import msvcrt

        while True:
            try:  # LK_LOCK retries for ~10 s, then raises: keep waiting like flock does
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue

else:

    def _lock(fd: int) -> None:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
