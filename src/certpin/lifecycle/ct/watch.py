"""`certpin ct watch`: every covered certificate in a set of CT logs, decided by the verdict.

A round, for each log in parallel:

1. fetch the latest tree head and verify its signature with the log list's key;
2. prove it consistent with the last verified head in the state (a consistency proof; a tree
   that shrank or forked is a ``log_error``);
3. fetch the new entries in chunks (each chunk in parallel batches), fold every leaf hash into
   the compact range, and check the chunk against the signed root (directly for the last chunk,
   by a consistency proof from the chunk's end for the others) — before anything from it is
   trusted;
4. for the entries whose DNS names a rule covers, run the verdict over the logged certificate
   and its linked issuer chain (`certpin.lifecycle.ct.decide`);
5. commit: advance the log's state and journal the chunk's records in one atomic write, print
   them, clear the journal (`certpin.lifecycle.ct.state` says why this survives ``kill -9``).

A log that fails any check is reported as ``{"kind": "log_error", "log": URL, "reason": …}``;
nothing of its unverified entries is printed and its state stays at the last verified point, so
the next round tries again. A precertificate and its final certificate (and one certificate in
several logs) share a ``tbs_sha256`` and are reported once.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from certpin._io.atomic import file_lock
from certpin.core.policy import Policy
from certpin.core.times import iso
from certpin.lifecycle.ct import merkle
from certpin.lifecycle.ct.certs import serial_and_key, tbs_of_certificate
from certpin.lifecycle.ct.decide import Candidate, Coverage, decide, names_of
from certpin.lifecycle.ct.entries import PRECERT_ENTRY, Entry
from certpin.lifecycle.ct.errors import EntryError, LogError
from certpin.lifecycle.ct.http import HttpClient
from certpin.lifecycle.ct.loglist import LogInfo
from certpin.lifecycle.ct.sources import LogSource, open_source
from certpin.lifecycle.ct.state import (
    LOCK_FILE,
    LogState,
    WatchState,
    load_state,
    save_state,
    state_directory,
)
from certpin.lifecycle.ct.sth import TreeHead

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_INTERVAL",
    "DEFAULT_PARALLEL",
    "RoundSummary",
    "Watcher",
    "webhook_event",
]

log = logging.getLogger("certpin.ct")

#: entries verified and committed together (a kill re-reads at most this many per log).
DEFAULT_CHUNK = 32768
#: requests in flight per log.
DEFAULT_PARALLEL = 4
#: logs read at the same time.
DEFAULT_LOGS_AT_ONCE = 8
#: seconds between rounds when polling.
DEFAULT_INTERVAL = 300.0
#: seconds a round may spend POSTing alerts; what is left is dropped (and logged).
WEBHOOK_BUDGET = 60.0
#: how long an issuance whose expiry could not be read is remembered (CA/B maximum validity).
_UNKNOWN_EXPIRY = dt.timedelta(days=398)
_TILE = 256

StartAt = Literal["beginning", "end"]
Emit = Callable[[dict[str, Any]], None]
Progress = Callable[[LogInfo, int, int], None]


@dataclass
class RoundSummary:
    """What a round found: counts of records printed, by kind, and of entries read."""

    pinned: int = 0
    unexpected: int = 0
    log_errors: int = 0
    malformed: int = 0
    entries: int = 0

    @property
    def exit_code(self) -> int:
        """3 when a log misbehaved (wins over 1), 1 for an unexpected certificate, else 0."""
        if self.log_errors:
            return 3
        return 1 if self.unexpected else 0


def webhook_event(record: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The webhook body for an unexpected certificate (docs/ct.md)."""
    hosts = ", ".join(record["hosts"])
    return {
        "event": "ct_unexpected",
        "time": iso(now),
        "certificate": record,
        "message": (
            f"a certificate for {hosts} with key {record['spki_pin']} matches no pin of its "
            f"rule ({record['log']} entry {record['index']})"
        ),
    }


class Watcher:
    """Watches `logs` for certificates that `policy` covers (see the module docstring).

    Args:
        logs: the logs to read (logs whose list state is not watched are skipped).
        policy: the pin policy.
        state_dir: where the state lives; None keeps it in memory (every run starts afresh).
        start_at: where to start in a log the state does not know yet.
        emit: called with every record to print, in commit order, from any thread (one at a
            time).
        webhook: an object with ``post(event, timeout) -> bool`` (the monitor's `Webhook`), or
            None.
        progress: called as ``progress(log, done, total)`` while entries are read.
    """

    def __init__(
        self,
        logs: Sequence[LogInfo],
        policy: Policy,
        *,
        state_dir: str | Path | None = None,
        start_at: StartAt = "beginning",
        emit: Emit,
        webhook: Any = None,
        progress: Progress | None = None,
        http: HttpClient | None = None,
        parallel: int = DEFAULT_PARALLEL,
        chunk: int = DEFAULT_CHUNK,
        logs_at_once: int = DEFAULT_LOGS_AT_ONCE,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.logs = [info for info in logs if info.watched]
        self.policy = policy
        self.coverage = Coverage(policy)
        self.state_dir = None if state_dir is None else state_directory(state_dir)
        self.start_at = start_at
        self.emit = emit
        self.webhook = webhook
        self.progress = progress
        self.http = http or HttpClient()
        self.parallel = max(1, parallel)
        self.chunk = max(_TILE, chunk)
        self.logs_at_once = max(1, logs_at_once)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        # Read now: a bad state file is an input error (exit 2) before anything is fetched.
        self.state = WatchState() if self.state_dir is None else load_state(self.state_dir)
        self._commit_lock = threading.Lock()
        self._count_lock = threading.Lock()
        # Either set stops reading at the next chunk boundary: what was committed stays
        # committed, the rest is read by the next run. `_stop` is `watch`'s (SIGTERM);
        # `_interrupted` is set for the round's threads when the main thread is interrupted.
        self._stop = threading.Event()
        self._interrupted = threading.Event()
        self._webhook_deadline = 0.0

    def close(self) -> None:
        """Close the kept-alive connections."""
        self.http.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rounds -------------------------------------------------------------------------------

    def run_once(self) -> RoundSummary:
        """Read every log once; returns what was found (its `exit_code` is the CLI's)."""
        summary = RoundSummary()
        now = self.clock()
        self._webhook_deadline = time.monotonic() + WEBHOOK_BUDGET
        self._interrupted.clear()
        with self._locked():
            if self.state_dir is not None:
                self.state = load_state(self.state_dir)
            self.state.prune(now)
            self._flush_pending(summary, now)
            workers = self.parallel * min(len(self.logs), self.logs_at_once) or 1
            with (
                ThreadPoolExecutor(workers, thread_name_prefix="certpin-ct-fetch") as fetch,
                ThreadPoolExecutor(self.logs_at_once, thread_name_prefix="certpin-ct-log") as pool,
            ):
                jobs = [
                    pool.submit(self._watch_log, info, fetch, now, summary) for info in self.logs
                ]
                try:
                    for job in jobs:
                        job.result()
                except BaseException:  # Ctrl-C in the main thread: let the logs stop soon
                    self._interrupted.set()
                    raise
        # The round's threads are gone: close their connections rather than keep them open
        # until the next round (a poller runs for months).
        self.http.close()
        return summary

    def watch(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        max_runs: int | None = None,
        stop: threading.Event | None = None,
        on_round: Callable[[RoundSummary], None] | None = None,
    ) -> RoundSummary:
        """Run rounds every `interval` seconds (start to start) until `stop` is set or
        `max_runs` rounds ran; returns the last round's summary. Setting `stop` during a round
        ends it at the next chunk boundary of each log."""
        stop = stop or threading.Event()
        self._stop = stop
        last = RoundSummary()
        runs = 0
        while not stop.is_set():
            started = time.monotonic()
            last = self.run_once()
            if on_round is not None:
                on_round(last)
            runs += 1
            if max_runs is not None and runs >= max_runs:
                break
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
        return last

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two watchers on one state (an overlapping cron run) take turns instead of racing.
        if self.state_dir is None:
            yield
            return
        with file_lock(self.state_dir / LOCK_FILE):
            yield

    # -- one log ------------------------------------------------------------------------------

    def _watch_log(
        self, info: LogInfo, fetch: ThreadPoolExecutor, now: dt.datetime, summary: RoundSummary
    ) -> None:
        key = base64.b64encode(info.key.log_id).decode()
        source = open_source(info, self.http, fetch)
        try:
            head = source.head()
            known = self.state.logs.get(key)
            if known is None:
                if self.start_at == "end":
                    start = LogState(info.url, head, source.compact_range(head))
                    self._commit(key, start, [], now, summary)
                    return
                known = LogState(info.url, TreeHead(0, merkle.EMPTY_ROOT), merkle.CompactRange())
            else:
                self._check_consistent(source, known.head, head)
            self._read(source, key, known, head, now, summary)
        except LogError as exc:
            record = {"kind": "log_error", "log": info.url, "reason": str(exc)}
            self._commit(key, None, [record], now, summary)

    def _check_consistent(self, source: LogSource, old: TreeHead, new: TreeHead) -> None:
        url = source.info.url
        if new.size < old.size:
            raise LogError(f"{url}: the signed tree shrank from {old.size} to {new.size} entries")
        if new.size == old.size:
            if new.root != old.root:
                raise LogError(
                    f"{url}: two signed roots for {new.size} entries: the log forked its tree"
                )
            return
        if old.size == 0:
            return  # the empty tree is a prefix of every tree (and logs refuse first=0)
        proof = source.consistency(old.size, new.size, new)
        if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise LogError(
                f"{url}: the tree of {new.size} entries is not consistent with the verified "
                f"tree of {old.size}: the log forked its tree"
            )

    def _chunk_end(self, info: LogInfo, position: int) -> int:
        end = position + self.chunk
        if info.kind == "tiled":  # whole data tiles: a tile is never fetched twice
            end = max(end // _TILE * _TILE, position // _TILE * _TILE + _TILE)
        return end

    def _read(
        self,
        source: LogSource,
        key: str,
        known: LogState,
        head: TreeHead,
        now: dt.datetime,
        summary: RoundSummary,
    ) -> None:
        info = source.info
        cr = known.range.copy()
        first = cr.size
        if first == head.size:
            if head.timestamp != known.head.timestamp:
                self._commit(key, LogState(info.url, head, cr), [], now, summary)
            return
        while cr.size < head.size and not (self._stop.is_set() or self._interrupted.is_set()):
            start = cr.size
            end = min(self._chunk_end(info, start), head.size)
            candidates: list[Candidate] = []
            for batch in source.entries(start, end, head):
                for entry in batch:
                    if entry.index != cr.size:  # Defensive: sources yield in order
                        raise LogError(f"{info.url}: entry {entry.index} out of order")
                    cr.append(entry.leaf_hash)
                    candidate = self._candidate(info, entry, summary)
                    if candidate is not None:
                        candidates.append(candidate)
                if self.progress is not None:
                    self.progress(info, cr.size - first, head.size - first)
            if cr.size != end:  # Defensive: the sources check their answers' sizes
                raise LogError(f"{info.url}: {cr.size - start} entries for [{start}, {end})")
            self._verify_chunk(source, cr, head, start)
            with self._count_lock:
                summary.entries += end - start
            records = []
            for candidate in candidates:
                record = self._decide(source, candidate, now)
                if record is not None:
                    records.append(record)
            self._commit(key, LogState(info.url, head, cr.copy()), records, now, summary)

    def _verify_chunk(
        self, source: LogSource, cr: merkle.CompactRange, head: TreeHead, start: int
    ) -> None:
        root = cr.root()
        if cr.size == head.size:
            ok = root == head.root
        else:
            proof = source.consistency(cr.size, head.size, head)
            ok = merkle.verify_consistency(cr.size, head.size, root, head.root, proof)
        if not ok:
            raise LogError(
                f"{source.info.url}: entries {start} to {cr.size - 1} do not hash into the "
                f"signed tree of {head.size} entries: the log served entries its tree does "
                "not hold"
            )

    def _candidate(self, info: LogInfo, entry: Entry, summary: RoundSummary) -> Candidate | None:
        try:
            names = names_of(entry)
        except EntryError as exc:
            with self._count_lock:
                summary.malformed += 1
            log.warning(
                "%s entry %d: cannot read the certificate's names: %s", info.url, entry.index, exc
            )
            return None
        rules = self.coverage.rules(names)
        return Candidate(entry, names, rules) if rules else None

    def _decide(
        self, source: LogSource, candidate: Candidate, now: dt.datetime
    ) -> dict[str, Any] | None:
        entry = candidate.entry
        try:
            leaf, issuers = source.chain(entry)
            if entry.entry_type == PRECERT_ENTRY:
                logged = serial_and_key(entry.tbs_or_cert)
                if serial_and_key(tbs_of_certificate(leaf)) != logged:
                    # The precertificate beside the entry is not in the Merkle tree: one with
                    # another key (a pinned one, say) would make a rogue entry look pinned.
                    raise LogError(
                        f"{source.info.url}: entry {entry.index}: the precertificate served "
                        "with the entry is not the one its tree entry was made from"
                    )
        except EntryError as exc:
            # The stored chain is not in the Merkle tree: a log serving a broken one for a
            # covered name gets that certificate reported, not silently skipped.
            log.warning("%s entry %d: %s", source.info.url, entry.index, exc)
            leaf, issuers = None, []
        return decide(candidate, leaf, issuers, self.policy, now, source.info.url)

    # -- committing and printing --------------------------------------------------------------

    def _commit(
        self,
        key: str,
        log_state: LogState | None,
        records: list[dict[str, Any]],
        now: dt.datetime,
        summary: RoundSummary,
    ) -> None:
        with self._commit_lock:
            fresh = []
            for record in records:
                if record["kind"] != "log_error":
                    issuance = record["tbs_sha256"] or _fallback_key(record)
                    if issuance in self.state.issuances:
                        continue  # the precertificate's final certificate, or another log's copy
                    expiry = record["not_after"] or iso(now + _UNKNOWN_EXPIRY)
                    self.state.issuances[issuance] = expiry
                fresh.append(record)
            journal = [r for r in fresh if r["kind"] != "log_error"]
            if log_state is not None:
                self.state.logs[key] = log_state
            if self.state_dir is not None and (log_state is not None or journal):
                self.state.pending = journal
                save_state(self.state_dir, self.state, now)
            self._print(fresh, summary, now)
            if self.state_dir is not None and journal:
                self.state.pending = []
                save_state(self.state_dir, self.state, now)

    def _flush_pending(self, summary: RoundSummary, now: dt.datetime) -> None:
        """Print what a killed run committed but may not have printed."""
        if not self.state.pending:
            return
        with self._commit_lock:
            self._print(self.state.pending, summary, now)
            self.state.pending = []
            if self.state_dir is not None:
                save_state(self.state_dir, self.state, now)

    def _print(
        self, records: list[dict[str, Any]], summary: RoundSummary, now: dt.datetime
    ) -> None:
        for record in records:
            kind = record.get("kind")
            if kind == "log_error":
                summary.log_errors += 1
            elif kind == "unexpected":
                summary.unexpected += 1
            else:
                summary.pinned += 1
            self.emit(record)
        if self.webhook is None:
            return
        for record in records:
            if record.get("kind") != "unexpected":
                continue
            left = self._webhook_deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "webhook: alert for %s entry %s not sent: the round's %g s budget is spent",
                    record["log"],
                    record["index"],
                    WEBHOOK_BUDGET,
                )
                continue
            self.webhook.post(webhook_event(record, now), timeout=min(10.0, left))


def _fallback_key(record: dict[str, Any]) -> str:
    """An issuance key for a certificate whose TBS could not be read: its log position."""
    return hashlib.sha256(f"{record['log']}#{record['index']}".encode()).hexdigest()
