"""The watcher's memory between runs: one JSON file in the ``--state`` directory.

Per log (keyed by LogID): the last verified tree head, how far the entries were read
(`position`), and the compact range of the tree at that position, so the next run verifies new
entries without fetching old ones. Beside the logs: the issuances already reported
(``tbs_sha256`` -> not_after, so a precertificate and its final certificate, or one certificate
in several logs, are reported once) and the records not yet known to be printed (``pending``).

Crash safety (``kill -9`` at any point): the file is only ever replaced whole
(`certpin._io.atomic.atomic_write`: temporary file, fsync, rename). A chunk of entries is
committed as one replacement that advances the position *and* stores the chunk's records as
pending; the records are printed, then a second replacement clears them. A run that finds
pending records prints them first. So a kill before the commit re-reads the chunk (nothing was
printed), and a kill after it prints the pending records on the next run (nothing is skipped).
Only a kill in the instant between printing a chunk's lines and the second rename repeats them.

The file is bounded like a policy: at most `MAX_STATE_SIZE` bytes of UTF-8 JSON.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certpin._io.atomic import atomic_write
from certpin.core.times import iso, parse_iso
from certpin.core.toml import DocumentError, parse_json, read_document
from certpin.lifecycle.ct.errors import WatchStateError
from certpin.lifecycle.ct.merkle import CompactRange
from certpin.lifecycle.ct.sth import TreeHead

__all__ = [
    "MAX_STATE_SIZE",
    "STATE_FILE",
    "STATE_FORMAT",
    "LOCK_FILE",
    "LogState",
    "WatchState",
    "load_state",
    "save_state",
]

STATE_FORMAT = "certpin-ct-state"
STATE_VERSION = 1
STATE_FILE = "ct-watch.json"
LOCK_FILE = ".ct-watch.lock"
#: the largest state file read.
MAX_STATE_SIZE = 64 * 1024 * 1024
_UINT64 = 2**64


@dataclass
class LogState:
    """What is known of one log: `range` covers entries [0, `position`); `head` is the last
    verified tree head (``head.size >= position``)."""

    url: str
    head: TreeHead
    range: CompactRange

    @property
    def position(self) -> int:
        return self.range.size

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "head": self.head.to_json(),
            "position": self.position,
            "range": [base64.b64encode(h).decode() for h in self.range.hashes],
        }


@dataclass
class WatchState:
    logs: dict[str, LogState] = field(default_factory=dict)
    #: tbs_sha256 -> not_after (ISO) of every issuance reported, until it expires
    issuances: dict[str, str] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)

    def prune(self, now: dt.datetime) -> None:
        """Forget issuances that expired more than a day ago (they cannot be used any more)."""
        cutoff = iso(now - dt.timedelta(days=1))
        self.issuances = {k: v for k, v in self.issuances.items() if v >= cutoff}


def _fail(path: Path, where: str, problem: str) -> WatchStateError:
    return WatchStateError(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


def _uint(value: object, path: Path, where: str) -> int:
    if type(value) is not int or not 0 <= value < _UINT64:
        raise _fail(path, where, "expected an unsigned 64-bit integer")
    return value


def _hash(value: object, path: Path, where: str) -> bytes:
    try:
        if not isinstance(value, str):
            raise ValueError
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise _fail(path, where, "expected a base64 SHA-256 hash")
    return raw


def _log_state(data: object, path: Path, where: str) -> LogState:
    if not isinstance(data, dict):
        raise _fail(path, where, "expected an object")
    url = data.get("url")
    head = data.get("head")
    hashes = data.get("range")
    if not isinstance(url, str):
        raise _fail(path, f"{where}.url", "expected a string")
    if not isinstance(head, dict):
        raise _fail(path, f"{where}.head", "expected an object")
    timestamp = head.get("timestamp")
    tree = TreeHead(
        _uint(head.get("size"), path, f"{where}.head.size"),
        _hash(head.get("root"), path, f"{where}.head.root"),
        None if timestamp is None else _uint(timestamp, path, f"{where}.head.timestamp"),
    )
    position = _uint(data.get("position"), path, f"{where}.position")
    if not isinstance(hashes, list) or len(hashes) > 64:
        raise _fail(path, f"{where}.range", "expected a list of at most 64 hashes")
    try:
        cr = CompactRange(position, [_hash(h, path, f"{where}.range") for h in hashes])
    except ValueError:
        raise _fail(path, f"{where}.range", f"not the compact range of {position} leaves") from None
    if position > tree.size:
        raise _fail(path, f"{where}.position", "beyond the verified tree head")
    if position == tree.size and cr.root() != tree.root:
        raise _fail(path, f"{where}.range", "does not hash to the verified root")
    return LogState(url, tree, cr)


def load_state(directory: Path) -> WatchState:
    """Read the state in `directory` (an empty state when there is none yet).

    Raises:
        WatchStateError: unreadable, over the limit, or not a state file this version wrote
            (the message names the file and the field).
    """
    path = directory / STATE_FILE
    try:
        text = read_document(path, MAX_STATE_SIZE)
    except FileNotFoundError:
        return WatchState()
    except OSError as exc:
        raise _fail(path, "", f"cannot read the state: {exc.strerror or exc}") from None
    except DocumentError as exc:
        raise _fail(path, exc.where, f"the state {exc.problem}") from None
    try:
        data = parse_json(text)
    except DocumentError as exc:
        raise _fail(path, exc.where, f"not JSON: {exc.problem}") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise _fail(path, "", f"not a certpin CT watch state (no format={STATE_FORMAT!r})")
    if data.get("version") != STATE_VERSION or type(data.get("version")) is not int:
        raise _fail(path, "version", f"unsupported (this certpin reads {STATE_VERSION})")
    logs, issuances, pending = data.get("logs"), data.get("issuances"), data.get("pending")
    if not isinstance(logs, dict):
        raise _fail(path, "logs", "expected an object")
    if not isinstance(issuances, dict) or not all(isinstance(v, str) for v in issuances.values()):
        raise _fail(path, "issuances", "expected an object of ISO times")
    for key, value in issuances.items():
        try:
            bytes.fromhex(key)
            parse_iso(value)
        except ValueError:
            raise _fail(path, f"issuances.{json.dumps(key)[:80]}", "bad entry") from None
    if not isinstance(pending, list) or not all(isinstance(r, dict) for r in pending):
        raise _fail(path, "pending", "expected a list of records")
    return WatchState(
        {k: _log_state(v, path, f"logs.{json.dumps(k)}") for k, v in logs.items()},
        dict(issuances),
        list(pending),
    )


def save_state(directory: Path, state: WatchState, now: dt.datetime) -> None:
    """Replace the state file atomically (0600: it lists the names watched)."""
    document = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "updated": iso(now),
        "logs": {k: v.to_json() for k, v in sorted(state.logs.items())},
        "issuances": dict(sorted(state.issuances.items())),
        "pending": state.pending,
    }
    data = json.dumps(document, indent=1, ensure_ascii=False).encode() + b"\n"
    try:
        atomic_write(directory / STATE_FILE, data, mode=0o600)
    except OSError as exc:
        raise WatchStateError(f"{directory / STATE_FILE}: cannot write the state: {exc}") from None


def state_directory(path: str | os.PathLike[str]) -> Path:
    """`path` as the state directory, created (0700) when missing."""
    directory = Path(path)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise WatchStateError(f"{directory}: cannot create the state directory: {exc}") from None
    if not directory.is_dir():
        raise WatchStateError(f"{directory}: not a directory")
    return directory
