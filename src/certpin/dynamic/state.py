"""What a `DynamicPolicy` remembers between refreshes and restarts: its cache directory.

``cache_dir`` holds the last good bundle (``bundle.jws``), the client's cohort id
(``client_id``), a lock file (``.lock``) and ``state.json``: the highest bundle version ever
accepted and the hash of its signed bytes, signing-key changes announced by bundles, the last
ETag, and two facts about time (see `certpin.dynamic.provider`): the newest verified
``issued_at`` minus the skew (``not_before``: time never reads earlier) and the latest kill
switch seen to end (``kill_switch_ended``).

`Memory` is that state in memory; every value in it only moves forward when merged with the
file (`Memory.read`), so two processes sharing a cache never roll each other back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certpin._io.atomic import atomic_write, file_lock
from certpin.dynamic.bundle import Bundle, BundleKillSwitch, _parse_time
from certpin.dynamic.jws import MAX_JSON_DEPTH, BundleError, TrustedKey, _json_object

__all__ = [
    "BUNDLE_FILE",
    "MAX_ETAG",
    "MAX_STATE_SIZE",
    "MAX_TRACKED_KEYS",
    "Memory",
    "State",
    "load_client_id",
    "parse_state",
    "read_capped",
]

log = logging.getLogger("certpin.dynamic")

BUNDLE_FILE = "bundle.jws"
STATE_FILE = "state.json"
CLIENT_ID_FILE = "client_id"
LOCK_FILE = ".lock"
#: Largest state.json read. What a client writes stays far below it: at most
#: `MAX_TRACKED_KEYS` added keys (≈ 160 bytes each) and retired kids (≈ 50 bytes each), an ETag
#: of at most `MAX_ETAG` characters, and a few scalars.
MAX_STATE_SIZE = 1024 * 1024
MAX_TRACKED_KEYS = 1024
MAX_ETAG = 1024
_HEX64 = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class State:
    """The contents of ``cache_dir/state.json`` (see `parse_state`).

    Attributes:
        highest_version: the highest bundle version ever accepted.
        highest_sha256: hex SHA-256 of the accepted token under that version (whole bytes;
            kept so an older certpin reading the cache still finds it).
        highest_signed_sha256: hex SHA-256 of its JWS signing input: what equivocation checks
            compare (None in a cache written before it existed).
        added_keys, retired_kids: signing-key changes announced by bundles.
        etag: the ETag of the last fetched bundle.
        not_before: the newest verified ``issued_at`` minus the skew: time never reads earlier.
        kill_switch_ended: the latest kill-switch ``until`` this client saw pass.
    """

    highest_version: int
    highest_sha256: str | None = None
    highest_signed_sha256: str | None = None
    added_keys: tuple[TrustedKey, ...] = ()
    retired_kids: tuple[str, ...] = ()
    etag: str | None = None
    not_before: dt.datetime | None = None
    kill_switch_ended: dt.datetime | None = None

    def to_json(self) -> bytes:
        def when(value: dt.datetime | None) -> str | None:
            # Full precision (certpin's other times are whole seconds): a `until` of
            # 12:00:00.5 recorded as 12:00:00 would not count as ended after a restart.
            return None if value is None else value.astimezone(dt.UTC).isoformat()[:-6] + "Z"

        doc = {
            "highest_version": self.highest_version,
            "highest_sha256": self.highest_sha256,
            "highest_signed_sha256": self.highest_signed_sha256,
            "added_keys": [k.jwk() for k in self.added_keys],
            "retired_kids": sorted(self.retired_kids),
            "etag": self.etag,
            "not_before": when(self.not_before),
            "kill_switch_ended": when(self.kill_switch_ended),
        }
        return json.dumps(doc, indent=2).encode()


def parse_state(data: bytes, where: str) -> State:
    """Parse a state.json file; raises `BundleError` (reason ``bad_cache``) and nothing else.

    The cache directory is outside input (another process, a full disk, a user, a restore from
    backup): the file is capped at `MAX_STATE_SIZE`, its nesting at `MAX_JSON_DEPTH`, and every
    member is type-checked. Unknown members are ignored (a newer certpin may add some).
    """

    def bad(detail: str) -> BundleError:
        return BundleError("bad_cache", f"{where}: {detail}")

    if len(data) > MAX_STATE_SIZE:
        raise bad(f"{len(data)} bytes, the limit is {MAX_STATE_SIZE}")
    try:
        doc = _json_object(data, where, max_depth=MAX_JSON_DEPTH)
    except BundleError as exc:
        raise bad(exc.detail) from None

    def digest(name: str) -> str | None:
        value = doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) != 64 or not _HEX64.issuperset(value):
            raise bad(f"{name} must be a hex SHA-256 or null")
        return value

    def when(name: str) -> dt.datetime | None:
        value = doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.endswith("Z"):
            raise bad(f"{name} must be an RFC 3339 UTC time or null")
        try:
            return _parse_time(value, name)
        except BundleError as exc:
            raise bad(exc.detail) from None

    def listed(name: str, kind: type) -> list[Any]:
        value = doc.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise bad(f"{name} must be a list")
        if len(value) > MAX_TRACKED_KEYS:
            raise bad(f"{name} has more than {MAX_TRACKED_KEYS} entries")
        return value

    highest = doc.get("highest_version")
    if isinstance(highest, bool) or not isinstance(highest, int) or highest < 0:
        raise bad("highest_version must be a non-negative integer")
    etag = doc.get("etag")
    if etag is not None and (not isinstance(etag, str) or len(etag) > MAX_ETAG):
        raise bad(f"etag must be a string of at most {MAX_ETAG} characters or null")
    try:
        added = tuple(TrustedKey.from_jwk(jwk) for jwk in listed("added_keys", dict))
    except BundleError as exc:
        raise bad(f"added_keys: {exc.detail}") from None
    return State(
        highest_version=highest,
        highest_sha256=digest("highest_sha256"),
        highest_signed_sha256=digest("highest_signed_sha256"),
        added_keys=added,
        retired_kids=tuple(listed("retired_kids", str)),
        etag=etag,
        not_before=when("not_before"),
        kill_switch_ended=when("kill_switch_ended"),
    )


def read_capped(path: Path, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of `path`: a caller seeing more than ``cap`` knows it is too
    big without reading (or holding) a file of any size in memory."""
    with path.open("rb") as fh:
        # Sized by the file (as `read_bytes` does), not by the cap: a 4 MiB buffer allocated
        # for a 200 KB bundle, then shrunk, costs ≈ 0.07 ms of the client's start.
        return fh.read(min(os.fstat(fh.fileno()).st_size, cap) + 1)


def load_client_id(cache: Path) -> str:
    """The cohort id kept in ``cache/client_id``, created (random, 128 bits) on first use."""
    path = cache / CLIENT_ID_FILE
    # Written atomically, so an existing id is read without the lock; the lock only
    # serialises processes racing to create the first one.
    known = _read_client_id(path)
    if known is not None:
        return known
    with file_lock(cache / LOCK_FILE):
        known = _read_client_id(path)
        if known is not None:
            return known
        new = secrets.token_hex(16)
        atomic_write(path, new.encode("ascii") + b"\n")
        return new


def _read_client_id(path: Path) -> str | None:
    try:
        data = read_capped(path, 64).strip()  # bytes: no text codec to look up at start
    except OSError:
        return None
    if len(data) == 32 and not data.strip(b"0123456789abcdef"):
        return data.decode("ascii")
    return None


class Memory:
    """``state.json`` in memory, and the rules by which it changes.

    Not locked by itself: the `DynamicPolicy` holds its own lock around every use, and
    `locked` (the cache's file lock) around every read-modify-write of the file.

    Attributes:
        highest: the highest version accepted (at least the client's ``min_version``).
        highest_sha, highest_signed: the whole-token and signing-input hashes of that bundle.
        added, retired: signing keys announced (kid -> key) and retired (kids) by bundles.
        etag: the last fetched bundle's ETag.
        not_before: time never reads earlier (`raise_floor`); ``floor_ts`` is its timestamp.
        kill_ended: the latest kill-switch ``until`` seen to pass (`kill_switch_ended`).
        dirty: changed since the last write.
    """

    def __init__(self, cache: Path, min_version: int) -> None:
        self.cache = cache
        self.min_version = min_version
        self.highest = min_version
        self.highest_sha: str | None = None  # whole-token hash (legacy caches compare it)
        self.highest_signed: str | None = None  # signing-input hash: the bundle's identity
        self.added: dict[str, TrustedKey] = {}
        self.retired: set[str] = set()
        self.etag: str | None = None
        self.not_before: dt.datetime | None = None
        self.floor_ts = float("-inf")  # not_before as a timestamp, for the handshake path
        self.kill_ended: dt.datetime | None = None
        self.dirty = False

    def locked(self) -> Any:
        """The cache's cross-process lock (a context manager)."""
        return file_lock(self.cache / LOCK_FILE)

    def read(self) -> None:
        """Merge state.json into memory; every value only moves forward (versions, floors)."""
        path = self.cache / STATE_FILE
        try:
            state = parse_state(read_capped(path, MAX_STATE_SIZE), str(path))
        except FileNotFoundError:
            return
        except (OSError, BundleError) as exc:
            log.error(
                "certpin: %s is unreadable (%s); keeping min_version %d",
                path,
                exc,
                self.min_version,
            )
            return
        if state.highest_version > self.highest:
            self.highest = state.highest_version
            self.highest_sha = state.highest_sha256
            self.highest_signed = state.highest_signed_sha256
        elif state.highest_version == self.highest:
            self.highest_sha = self.highest_sha or state.highest_sha256
            self.highest_signed = self.highest_signed or state.highest_signed_sha256
        for key in state.added_keys:
            self.added[key.kid] = key
        self.retired.update(state.retired_kids)
        self.etag = state.etag
        if state.not_before is not None:
            self._floor(state.not_before)
        ended = state.kill_switch_ended
        if ended is not None and (self.kill_ended is None or ended > self.kill_ended):
            self.kill_ended = ended

    def save(self) -> None:
        """Write state.json (atomically); the caller holds `locked`."""
        state = State(
            highest_version=self.highest,
            highest_sha256=self.highest_sha,
            highest_signed_sha256=self.highest_signed,
            added_keys=tuple(self.added.values()),
            retired_kids=tuple(self.retired),
            etag=self.etag,
            not_before=self.not_before,
            kill_switch_ended=self.kill_ended,
        )
        atomic_write(self.cache / STATE_FILE, state.to_json())
        self.dirty = False

    def flush(self) -> None:
        """Write state changed outside an install (a kill switch seen ending, a floor learnt
        from the cache, an ETag): merged with the file under the lock, so another process's
        newer version is never overwritten. A failed write is logged and retried by the next
        refresh; memory already holds the change."""
        if not self.dirty:
            return
        etag = self.etag
        try:
            with self.locked():
                self.read()
                self.etag = etag
                self.save()
        except OSError as exc:
            log.error("certpin: cannot write %s: %s", self.cache / STATE_FILE, exc)

    def same_as_highest(self, bundle: Bundle) -> bool | None:
        """Is `bundle` the one accepted under the highest version? None: nothing to compare.

        The signing input is compared, not the token: ES256 signatures are malleable, and a
        CDN serving the ``(r, n - s)`` copy first must not make the publisher's own bytes look
        like a compromised key re-signing a version. A cache written before certpin kept the
        signing-input hash only has the whole-token hash (upgraded when the cache is loaded).
        """
        if self.highest_signed is not None:
            return bundle.signed_sha256 == self.highest_signed
        if self.highest_sha is not None:
            return bundle.sha256 == self.highest_sha
        return None

    def too_many_keys(self, bundle: Bundle) -> bool:
        """Would installing `bundle` track more than `MAX_TRACKED_KEYS` added or retired keys?"""
        added = {**self.added, **{k.kid: k for k in bundle.add_keys}}
        retired = (self.retired - set(added)) | set(bundle.retire_keys)
        return len(added) > MAX_TRACKED_KEYS or len(retired) > MAX_TRACKED_KEYS

    def record(self, bundle: Bundle, skew: dt.timedelta) -> None:
        """Remember `bundle` as the highest accepted (the caller writes the state next)."""
        self.highest = bundle.version
        self.highest_sha = bundle.sha256
        self.highest_signed = bundle.signed_sha256
        for key in bundle.add_keys:
            self.added[key.kid] = key
            self.retired.discard(key.kid)
        self.retired.update(bundle.retire_keys)
        self.raise_floor(bundle, skew)

    def raise_floor(self, bundle: Bundle, skew: dt.timedelta) -> None:
        """Time never reads earlier than the newest verified issued_at minus the skew."""
        if self._floor(bundle.issued_at - skew):
            self.dirty = True

    def _floor(self, floor: dt.datetime) -> bool:
        if self.not_before is not None and floor <= self.not_before:
            return False
        self.not_before = floor
        self.floor_ts = floor.timestamp()
        return True

    def kill_switch_ended(self, kill: BundleKillSwitch, now: dt.datetime) -> bool:
        """True once `kill` is over; the first time, remembers it (written by `flush`).

        A switch is over when ``now >= until`` or when a switch ending at or after its
        ``until`` was already seen over: this client then saw the clock pass ``until``, and an
        earlier reading now can only be a clock set back.
        """
        ended = self.kill_ended
        if ended is not None and kill.until <= ended:
            return True
        if now < kill.until:
            return False
        self.kill_ended = kill.until
        self.dirty = True
        log.warning(
            "certpin: the kill switch (%s) ended at %s: pins apply again, and keep applying "
            "even if the clock is set back",
            kill.reason or "no reason given",
            kill.until.isoformat(),
        )
        return True
