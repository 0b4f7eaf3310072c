"""Group commit: the writer that stores queued reports in batches, ONE transaction each.

Request handlers `submit` a normalised report and await its `Outcome`; a 2xx is sent only after
the batch holding the report was committed. Two writers share `store_batch` (the retry and
isolation rules) and differ in where the database work runs:

* `ProcessWriter` (the default): a `multiprocessing` child (the ``spawn`` start method: a fresh
  interpreter that inherits no socket, lock or thread of the server) that owns its own `Store`,
  connected by a `multiprocessing.Pipe`. The child has its own interpreter lock: with the
  writer as a thread, every step of a commit (each SQLite row returned, each Postgres round
  trip) had to win the lock back from the event loop, which holds it for up to the switch
  interval (5 ms) while it parses reports, so a 5-row commit took 5 ms and p99 at 1 000
  reports/s reached 30-60 ms. The event loop itself sends to and reads from the pipe (no thread
  of the server competes with it for the lock, and the loop's own send happens at the end of
  its turn, not when a thread gets the lock; see `_Link` for why a send never blocks). The
  child puts itself in its own process group (Ctrl-C at a terminal reaches the server
  alone), ignores SIGINT and SIGTERM (a service manager may signal every process of the
  service), and ends when told to, after committing everything it received; if the server is
  killed, it reads end-of-file and ends the same way. If the child dies, the reports waiting
  on it fail (503, retried by clients: the key makes a retry idempotent) and a new child
  starts.
* `ThreadWriter`: the same loop on a thread of the server process, for embedding the app
  where starting a process is unwanted (``Collector(writer="thread")``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import multiprocessing.util
import operator
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from certpin._errors import CertpinError
from certpin.collector.dialects import Report
from certpin.collector.store import Outcome, Store, is_transient

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from certpin.collector.alerts import Alerter

log = logging.getLogger("certpin.collector")

__all__ = ["Overloaded", "ProcessWriter", "StoreFailure", "ThreadWriter", "store_batch"]


class Overloaded(CertpinError):
    """Too many reports wait for a commit (``max_queue``), or the writer is stopping."""


class StoreFailure(CertpinError):
    """A report could not be stored (the message says why)."""


Item = tuple[Report, str | None]


def store_batch(store: Store, items: Sequence[Item]) -> list[Outcome | Exception]:
    """Store `items` in ONE transaction; one `Outcome` per item, or the exception that kept it
    from being stored.

    Transient faults (SQLite busy beyond its timeout, a Postgres deadlock between replicas, a
    lost connection) are retried: the transaction was rolled back, so a retry cannot
    duplicate. A batch the database refuses for another reason (a value it cannot store) is
    split and each report tried alone, so one bad report fails alone. Never raises.
    """
    try:
        return list(_insert(store, items))
    except Exception as exc:
        if len(items) > 1 and not is_transient(exc):
            out: list[Outcome | Exception] = []
            for item in items:
                out.extend(store_batch(store, [item]))
            return out
        # The database is unavailable (retries exhausted), or the one bad report: fail them
        # now rather than retrying report by report while clients wait.
        log.error("certpin collector: cannot store %d report(s): %s", len(items), exc)
        return [exc] * len(items)


def _insert(store: Store, items: Sequence[Item]) -> list[Outcome]:
    for attempt in range(4):
        try:
            return store.insert_batch(items)
        except Exception as exc:
            if attempt == 3 or not is_transient(exc):
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _fail(future: asyncio.Future[Outcome], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def _settle(
    alerter: Alerter,
    waiting: Sequence[tuple[Report, asyncio.Future[Outcome]]],
    results: Sequence[Outcome | Exception],
) -> None:
    """Resolve each report's future with its result (on the loop), then schedule alerts for
    the stored ones."""
    stored = []
    for (report, future), result in zip(waiting, results, strict=True):
        if isinstance(result, Exception):
            _fail(future, result)
            continue
        if not future.done():  # the client may have gone; the report is stored anyway
            future.set_result(result)
        stored.append((report, result))
    if stored:
        alerter.committed(stored)


class _Writer:
    """What both writers are configured with, and count."""

    def __init__(self, store: Store, alerter: Alerter, max_batch: int, max_queue: int) -> None:
        self.store = store
        self.alerter = alerter
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batches = 0  # commits answered
        self._stopping = False


# -- the thread ------------------------------------------------------------------------------------


class ThreadWriter(_Writer):
    """Group commit on a thread of this process: takes everything queued (up to
    ``max_batch``), commits it, hands the outcomes back to the event loop."""

    def __init__(self, store: Store, alerter: Alerter, max_batch: int, max_queue: int) -> None:
        super().__init__(store, alerter, max_batch, max_queue)
        self._items: collections.deque[_Queued] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="certpin-collector-writer", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Commit what is queued, then end the thread (shutdown). Reports submitted from now
        on are refused (503)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        with self._cond:  # Defensive: the thread drains the queue before it ends
            left = list(self._items)
            self._items.clear()
        for _, _, future in left:
            _fail(future, Overloaded())

    async def submit(self, report: Report, source: str | None) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        with self._cond:
            thread = self._thread
            if (
                self._stopping
                or thread is None
                or not thread.is_alive()
                or len(self._items) >= self.max_queue
            ):
                raise Overloaded
            self._items.append((report, source, future))
            self._cond.notify()
        return await future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if not self._items:
                    return
                take = min(len(self._items), self.max_batch)
                batch = [self._items.popleft() for _ in range(take)]
            try:
                self._commit(batch)
            except Exception as exc:  # Defensive: the thread must outlive any one batch
                log.exception("certpin collector: writer failed on a batch")
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    for _, _, future in batch:
                        loop.call_soon_threadsafe(_fail, future, exc)

    def _commit(self, batch: list[_Queued]) -> None:
        assert self._loop is not None
        results = store_batch(self.store, [(report, source) for report, source, _ in batch])
        self.batches += 1
        waiting = [(report, future) for report, _, future in batch]
        self._loop.call_soon_threadsafe(_settle, self.alerter, waiting, results)


_Queued = tuple[Report, str | None, "asyncio.Future[Outcome]"]


# -- the process -----------------------------------------------------------------------------------

# What crosses the pipe (pickled by multiprocessing): to the child, lists of
# ``(seq, source, fields)`` with a report's fields as a plain tuple (pickling the dataclass
# costs ≈ 4x as much, on every report), and a final None ("commit, then end"); back, one list
# of replies per batch, ``(seq, id, new, new_pin)`` stored or ``(seq, reason)`` not. A report's
# fields cross as they are: all exact (times are integer microseconds, validated in bounds by
# the parser), so the child converts nothing — a float time once crossed here and a year-10000
# value killed the child (issue item 8).
_FIELDS = tuple(field.name for field in dataclasses.fields(Report))
_values = operator.attrgetter(*_FIELDS)


def _pack(report: Report) -> tuple[Any, ...]:
    values: tuple[Any, ...] = _values(report)
    return values


def _unpack(values: Sequence[Any]) -> Report:
    return Report(*values)


_Message = tuple[int, str | None, tuple[Any, ...]]


class ProcessWriter(_Writer):
    """Group commit in a child process (see the module docstring)."""

    def __init__(self, store: Store, alerter: Alerter, max_batch: int, max_queue: int) -> None:
        super().__init__(store, alerter, max_batch, max_queue)
        self.restarts = 0
        self.process: BaseProcess | None = None
        self._link: _Link | None = None
        self._seq = itertools.count()
        self._waiting: dict[int, tuple[Report, asyncio.Future[Outcome]]] = {}
        self._outbox: list[_Message] = []
        self._flush_due = False
        self._sent: asyncio.Future[None] | None = None  # stop() waits for the outbox to go
        self._closed: asyncio.Future[None] | None = None
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping = False
        await self._spawn()

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        # The database URL with its password reaches the child through the pipe
        # multiprocessing starts it with, not its command line.
        url = self.store.url.render_as_string(hide_password=False)
        link = await asyncio.to_thread(_Link, url, self.store.schema, self.max_batch)
        self._closed = loop.create_future()
        self.process = link.process
        self._link = link
        link.serve(self, loop)

    async def stop(self) -> None:
        """Let the child commit everything it was sent, then wait for it to end (shutdown).
        Reports submitted from now on are refused (503)."""
        self._stopping = True
        if self._starting is not None:
            await self._starting
        link = self._link
        while link is not None and self._link is link and self._outbox:
            self._flush()  # as much as the pipe holds; the rest once the child answers
            if self._outbox and self._link is link:
                self._sent = asyncio.get_running_loop().create_future()
                await self._sent
        if link is not None and self._link is link:
            link.end()
        if self._closed is not None:
            await self._closed
        if self.process is not None:
            await asyncio.to_thread(self.process.join)

    async def submit(self, report: Report, source: str | None) -> Outcome:
        if self._stopping or len(self._waiting) >= self.max_queue:
            raise Overloaded
        link = self._link
        if link is None:
            raise StoreFailure("the writer process is restarting")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        seq = next(self._seq)
        self._waiting[seq] = (report, future)
        self._outbox.append((seq, source, _pack(report)))
        # Sent once per turn of the event loop, together with the reports submitted in the
        # same turn: one message and one wake-up of the child for all of them (and so a batch
        # of all of them), not one each. (Sending each report to an idle child at once was
        # measured: smaller batches, ≈ 30 µs more of the loop's CPU and ≈ 40 µs more of the
        # child's per report, no more throughput.)
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_due = False
        link = self._link
        if link is None:
            self._outbox = []  # Defensive: `_lost` failed their futures
            return
        while self._outbox:
            chunk = self._outbox[: self.max_batch]
            if not link.send(chunk):
                break  # the pipe is full: the rest goes when the child answers
            del self._outbox[: len(chunk)]
        if not self._outbox and self._sent is not None and not self._sent.done():
            self._sent.set_result(None)

    def _received(self, replies: list[tuple[Any, ...]]) -> None:
        """One batch's answers: ``(seq, id, new, new_pin)`` stored, ``(seq, reason)`` not."""
        waiting = []
        results: list[Outcome | Exception] = []
        for seq, *result in replies:
            entry = self._waiting.pop(seq, None)
            if entry is not None:
                waiting.append(entry)
                if len(result) == 1:
                    results.append(StoreFailure(result[0]))
                else:
                    results.append(Outcome(result[0], new=result[1], new_pin=result[2]))
        self.batches += 1
        _settle(self.alerter, waiting, results)

    def _lost(self, link: _Link) -> None:
        if link is not self._link:  # Defensive: a link is lost once
            return
        self._link = None
        self._outbox = []
        for _, future in self._waiting.values():
            _fail(future, StoreFailure("the writer process ended"))
        self._waiting.clear()
        for done in (self._sent, self._closed):
            if done is not None and not done.done():
                done.set_result(None)
        if not self._stopping:
            self.restarts += 1
            self._starting = asyncio.get_running_loop().create_task(self._restart(link))

    async def _restart(self, link: _Link) -> None:
        await asyncio.to_thread(link.process.join)
        code = link.process.exitcode
        log.error("certpin collector: the writer process ended (exit %s); restarting", code)
        while not self._stopping:
            try:
                await self._spawn()
                break
            except Exception:  # Defensive: cannot start a process (resources exhausted)
                log.exception("certpin collector: cannot start the writer process; retrying")
                await asyncio.sleep(1)
        self._starting = None


_START_SECONDS = 60
"""How long a new writer process may take to start (import, open its store) before it is
killed and the start fails."""

_PIPE_BUFFER = 4 << 20
"""The send buffer asked for on the server's end of the pipe (the system may grant less)."""


class _Link:
    """One writer child and the server's end of its pipe, used by the event loop itself.

    No thread of the server touches the pipe (each would have to win the interpreter lock
    from the event loop for every message). Replies are read when the loop sees the pipe
    readable; the child writes a reply message of up to 16 KiB in one call (multiprocessing
    writes a larger one, only seen when many reports fail with long reasons, in two, and the
    loop may wait for the second). Sends must never block the loop, so
    the bytes sent and not yet answered are kept below what the pipe's buffer holds: the child
    reads everything sent before it commits, so bytes whose replies came back have left the
    buffer. Beyond that, reports wait in the writer's outbox (bounded by ``max_queue``) until
    the child answers.
    """

    def __init__(self, url: str, schema: str | None, max_batch: int) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self.process = context.Process(
            target=child_main,
            args=(theirs, url, schema, max_batch),
            name="certpin-collector-writer",
        )
        self.process.start()
        theirs.close()  # the child's copy is its own: EOF reaches each side when the other ends
        self.conn = ours
        # Started means ready: out of the terminal's process group, deaf to SIGINT/SIGTERM.
        try:
            if not ours.poll(_START_SECONDS):
                self.process.kill()
                raise EOFError
            ours.recv()
        except EOFError:
            self.process.join()
            ours.close()
            code = self.process.exitcode
            raise StoreFailure(f"the writer process did not start (exit {code})") from None
        self.capacity = _send_capacity(ours)
        # Sent and not yet answered: (the last seq of a message, its size), oldest first.
        self._unanswered: collections.deque[tuple[int, int]] = collections.deque()
        self._unanswered_bytes = 0
        self._writer: ProcessWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # An interpreter that exits without `ProcessWriter.stop` joins its children
        # (multiprocessing's exit handler) after running finalizers like this one: the end
        # message lets the child commit and end, so that join cannot wait forever.
        multiprocessing.util.Finalize(self, _send_end, args=(ours,), exitpriority=0)

    def serve(self, writer: ProcessWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = writer
        self._loop = loop
        try:
            loop.add_reader(self.conn.fileno(), self._readable)
        except NotImplementedError:  # Defensive: Windows' proactor loop watches no pipe
            _send_end(self.conn)
            self.process.join()
            self.conn.close()
            raise StoreFailure(
                "the writer process needs an event loop that can watch its pipe (a selector "
                "loop); use writer='thread'"
            ) from None

    def send(self, messages: list[_Message]) -> bool:
        """Send `messages` as one message unless the pipe might not hold it (False: try again
        after the next replies). Once the child is gone, True (`_lost` fails the reports)."""
        if self.conn.closed:
            return True
        data = ForkingPickler.dumps(messages)
        if self._unanswered and self._unanswered_bytes + len(data) > self.capacity:
            return False
        # With nothing unanswered the child is waiting for this: a message larger than the
        # buffer (reports of up to `max_batch` × the body limit) is read while it is written.
        try:
            self.conn.send_bytes(data)
        except OSError:
            return True  # the child is gone: the loop reads end-of-file and reports it
        self._unanswered.append((messages[-1][0], len(data)))
        self._unanswered_bytes += len(data)
        return True

    def end(self) -> None:
        """Send the end message: the child commits what it was sent, answers, and ends."""
        _send_end(self.conn)

    def _readable(self) -> None:
        assert self._writer is not None and self._loop is not None
        while True:
            try:
                if not self.conn.poll():
                    return
                replies = self.conn.recv()
            except (EOFError, OSError):
                break
            answered = max((seq for seq, *_ in replies if isinstance(seq, int)), default=None)
            while answered is not None and self._unanswered and self._unanswered[0][0] <= answered:
                self._unanswered_bytes -= self._unanswered.popleft()[1]
            self._writer._received(replies)
            if self._writer._outbox:
                self._writer._flush()
        # The child has ended.
        self._loop.remove_reader(self.conn.fileno())
        self.conn.close()
        self._writer._lost(self)


def _send_end(conn: Connection) -> None:
    if not conn.closed:
        with contextlib.suppress(OSError):  # the child is gone already
            conn.send(None)


def _send_capacity(conn: Connection) -> int:
    """Bytes the server may have sent and not yet had answered without a send ever blocking:
    half of the send buffer granted to our end of the pipe (a socket pair on POSIX; Linux
    reports twice the size asked for, and caps it at ``net.core.wmem_max``)."""
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except OSError:  # Defensive: not a socket (another platform's pipe)
        return 64 * 1024
    with sock:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _PIPE_BUFFER)
        granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        return granted // 2


def _answer(store: Store, batch: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Store one batch of ``(seq, source, fields)`` messages; the replies for `_received`.

    A report the child cannot read or the database refuses fails alone, with a reply naming
    why; the child itself must outlive any report (if it died, every report in flight would
    fail with it, and a client repeating the report would keep ingest down for everyone).
    Never raises.
    """
    replies: list[tuple[Any, ...]] = []
    items: list[Item] = []
    stored: list[int] = []
    for message in batch:
        try:
            seq, source, fields = message
            items.append((_unpack(fields), source))
        except Exception as exc:
            seq = message[0] if isinstance(message, tuple) and message else None
            log.error("certpin collector: writer cannot read report %s: %s", seq, exc)
            replies.append((seq, f"the writer cannot read this report: {exc}"[:500]))
            continue
        stored.append(seq)
    results = store_batch(store, items)  # never raises: one result per item
    for seq, result in zip(stored, results, strict=True):
        if isinstance(result, Outcome):
            replies.append((seq, result.id, result.new, result.new_pin))
        else:
            replies.append((seq, (str(result) or type(result).__name__)[:500]))
    return replies


def child_main(conn: Connection, url: str, schema: str | None, max_batch: int) -> None:
    """The writer process: read reports, store them in batches, answer with the outcomes;
    end (after committing everything received) on the end message or end-of-file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(os, "setpgid"):  # POSIX: out of the terminal's foreground process group
        os.setpgid(0, 0)
    store = Store(url, schema=schema)
    conn.send("ready")
    ended = False
    try:
        while not ended:
            messages: list[Any] = []
            # Block until something comes, then take everything already sent as well.
            while not ended and (not messages or conn.poll()):
                try:
                    received = conn.recv()
                except EOFError:  # the server is gone: commit what came, then end
                    received = None
                if received is None:
                    ended = True
                else:
                    messages.extend(received)
            for start in range(0, len(messages), max_batch):
                replies = _answer(store, messages[start : start + max_batch])
                with contextlib.suppress(OSError):  # the server is gone: nobody waits for them
                    conn.send(replies)
    finally:
        store.close()
        conn.close()
