"""Collector ingest: durable reports/second and p50/p99 latency under concurrent clients, against
a bare Starlette endpoint that returns 204, measured in the same run, interleaved.

Each server runs in its own process under the same uvicorn settings (one worker, access log
off, the HTTP parser of ``--http``: h11 by default, the comparison of the recorded figures;
``--http httptools`` is what ``certpin serve`` uses where httptools is installed); the same
client drives both: ``--clients`` concurrent keep-alive HTTP/1.1 connections
(raw asyncio streams, so the client costs little), ``--per-client`` reports each, every body a
unique certpin-dialect report (fresh ``report-id``) with a real 3-certificate chain (≈ 3 KiB).

* **bare**: Starlette, ``POST /reports`` reads the body, answers 204. The ceiling.
* **sqlite**: `certpin.collector.app.create_app` on a fresh SQLite file (WAL,
  ``synchronous=FULL``): each 201 is sent after its group commit returned.
* **postgres**: the same on 127.0.0.1:5432 (database ``test``, trust auth), in a throwaway
  schema dropped afterwards; skipped, saying so, where no server answers.

The collector's per-address rate limit is off (every client here is 127.0.0.1). After each run
the stored rows are counted: they must equal the 201s (nothing acknowledged and lost).
Goal: collector throughput >= 50 % of bare, p99 < 50 ms.

    .venv/bin/python bench/collector_ingest.py [--clients 32] [--per-client 150] [--rounds 3]
        [--http h11|httptools]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from _common import BENCH, ROOT, Result, print_table, test_pki

PG_USERS = ("postgres", "root")
P99_GOAL_MS = 50.0


# -- servers (child processes) ---------------------------------------------------------------------


def serve(kind: str, db: str | None, schema: str | None, http: str) -> None:
    """Child process: serve `kind` on an ephemeral loopback port; print the port."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    if kind == "bare":

        async def reports(request: Request) -> Response:
            await request.body()
            return Response(status_code=204)

        async def healthz(_request: Request) -> Response:
            return Response(status_code=204)

        app = Starlette(
            routes=[
                Route("/reports", reports, methods=["POST"]),
                Route("/healthz", healthz, methods=["GET"]),
            ]
        )
    else:
        from certpin.collector.app import create_app

        app = create_app(db, "bench-token", rate_limit=None, db_schema=schema)
    from certpin.cli.serve import listen_socket

    # certpin serve's own socket for both servers: TCP_NODELAY on every connection (with a
    # proto-0 socket each JSON answer waited ~40 ms for a delayed ACK: the collector's
    # figures before this run were measured that way).
    if os.environ.get("SWI"):
        sys.setswitchinterval(float(os.environ["SWI"]))
    sock = listen_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, http=http, ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    asyncio.run(server.serve(sockets=[sock]))


class Server:
    def __init__(
        self, kind: str, db: str | None = None, schema: str | None = None, http: str = "h11"
    ) -> None:
        args = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--http", http]
        if db is not None:
            args += ["--db", db]
        if schema is not None:
            args += ["--schema", schema]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        deadline = time.monotonic() + 30
        while not self._healthy():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(64).split(b" ")[1] in (b"200", b"204")
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the client ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    case: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_bodies(count: int) -> list[bytes]:
    pki = test_pki().make_pki(("bench.example.test",))  # type: ignore[attr-defined]
    import ssl

    chain = [ssl.DER_cert_to_PEM_cert(d) for d in pki.leaf.chain_der(include_root=True)]
    base = {
        "date-time": "2025-01-02T03:04:05Z",
        "hostname": "bench.example.test",
        "port": 443,
        "effective-expiration-date": None,
        "include-subdomains": False,
        "noted-hostname": "bench.example.test",
        "served-certificate-chain": chain[:2],
        "validated-certificate-chain": chain,
        "known-pins": [
            'pin-sha256="' + base64.b64encode(hashlib.sha256(seed).digest()).decode() + '"'
            for seed in (b"backup-1", b"backup-2")
        ],
        "certpin-version": "0.1.0",
        "mode": "enforce",
        "verdict-status": "failed",
        "verdict-reason": "no pin of the rule matches the verified chain",
        "app-bundle-id": "bench-app",
        "app-version": "1.0",
    }
    return [json.dumps({**base, "report-id": uuid.uuid4().hex}).encode() for _ in range(count)]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: bytes
) -> int:
    """One keep-alive ``POST /reports`` and its whole response; returns the status."""
    head = (
        f"POST /reports HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    headers = await reader.readuntil(b"\r\n\r\n")
    status = int(headers.split(b" ", 2)[1])
    length = 0
    for line in headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _client(
    port: int, bodies: list[bytes], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            start = time.perf_counter()
            status = await _exchange(reader, writer, port, body)
            latencies.append((time.perf_counter() - start) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
        await writer.wait_closed()


async def _load(
    port: int, bodies: list[bytes], clients: int
) -> tuple[float, list[float], dict[int, int]]:
    per = len(bodies) // clients
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    await asyncio.gather(
        *(
            _client(port, bodies[i * per : (i + 1) * per], latencies, statuses)
            for i in range(clients)
        )
    )
    return time.perf_counter() - start, latencies, statuses


def drive(case: str, server: Server, bodies: list[bytes], clients: int) -> Run:
    warm = make_warmup(len(bodies) // 10 or clients, clients, bodies)
    asyncio.run(_load(server.port, warm, clients))
    seconds, latencies, statuses = asyncio.run(_load(server.port, bodies, clients))
    return Run(case, len(bodies), seconds, latencies, statuses)


async def _open_loop(
    port: int, bodies: list[bytes], rate: float, connections: int
) -> tuple[float, list[float], dict[int, int]]:
    """Offer `bodies` at `rate` requests/s whatever the answers (open loop), over a pool of
    `connections` keep-alive connections. Request i is due at ``start + i / rate`` and its
    latency counts from then: one that waits for a free connection is late, and the wait is
    part of its latency (no coordinated omission). Returns (seconds until the last answer,
    latencies in ms, statuses)."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (item := await queue.get()) is not None:
            due, body = item
            status = await _exchange(reader, writer, port, body)
            latencies.append((time.perf_counter() - due) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    workers = [asyncio.create_task(worker(r, w)) for r, w in conns]
    start = time.perf_counter()
    for i, body in enumerate(bodies):
        due = start + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, body))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    seconds = time.perf_counter() - start
    for _, writer in conns:
        writer.close()
        await writer.wait_closed()
    return seconds, latencies, statuses


@dataclass(frozen=True)
class Step:
    rate: float
    achieved: float
    p99: float
    statuses: dict[int, int]

    @property
    def ok(self) -> bool:
        # Sustained: (nearly) everything offered was answered in time, and the tail held.
        return self.achieved >= 0.95 * self.rate and self.p99 < P99_GOAL_MS


def capacity(
    case: str, server: Server, seconds: float, connections: int, clients: int
) -> tuple[float, list[Step], dict[int, int]]:
    """(The highest offered rate the server sustains with p99 < 50 ms (see `Step.ok`), every
    step, the warm-up's statuses). Rates doubled from 500/s until one fails, then 4 bisection
    steps (±3 %). Each step offers `seconds` worth of unique reports."""
    warm = [b.replace(b'"report-id": "', b'"report-id": "w') for b in make_bodies(clients * 20)]
    _, _, warm_statuses = asyncio.run(_load(server.port, warm, clients))
    steps: list[Step] = []

    def step(rate: float) -> bool:
        bodies = make_bodies(int(rate * seconds))
        took, latencies, statuses = asyncio.run(_open_loop(server.port, bodies, rate, connections))
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        answered = sum(statuses.get(s, 0) for s in (201, 204))
        result = Step(rate, answered / took, p99, statuses)
        steps.append(result)
        print(
            f"  {case:8s} offered {rate:6.0f}/s  achieved {result.achieved:6.0f}/s  "
            f"p99 {p99:7.1f} ms  {'ok' if result.ok else 'NOT sustained'}",
            flush=True,
        )
        return result.ok

    good, bad = 0.0, 500.0
    while step(bad):
        good, bad = bad, bad * 2
    for _ in range(4):
        mid = (good + bad) / 2 if good else bad / 2
        if step(mid):
            good = mid
        else:
            bad = mid
    return good, steps, warm_statuses


def make_warmup(count: int, clients: int, bodies: list[bytes]) -> list[bytes]:
    # Unique too (a duplicate takes a different, cheaper path); rounded to whole clients.
    count = max(clients, count - count % clients)
    return [b.replace(b'"report-id": "', b'"report-id": "w') for b in bodies[:count]]


# -- databases -------------------------------------------------------------------------------------


def pg_url() -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    for user in PG_USERS:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=5432, dbname="test", user=user, connect_timeout=2
            ):
                return f"postgresql://{user}@127.0.0.1:5432/test"
        except psycopg.Error:
            continue
    return None


def database(case: str, sqlite_file: Path, pg: str | None) -> tuple[str | None, str | None]:
    """(database URL or file, Postgres schema) for `case`: none for bare, a fresh SQLite file,
    or a throwaway schema on Postgres."""
    if case == "sqlite":
        return str(sqlite_file), None
    if case == "postgres":
        return pg, f"certpin_bench_{uuid.uuid4().hex[:10]}"
    return None, None


def stored(db: str, schema: str | None) -> int:
    from certpin.collector.store import Store

    store = Store(db, schema=schema)
    try:
        return store.totals()[0]
    finally:
        store.close()


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- main ------------------------------------------------------------------------------------------


def run(
    clients: int = 32, per_client: int = 150, rounds: int = 3, http: str = "h11"
) -> list[Result]:
    total = clients * per_client
    pg = pg_url()
    cases = ["sqlite"] + (["postgres"] if pg else [])
    if pg is None:
        print("postgres: no server at 127.0.0.1:5432 (database 'test'); skipped")
    runs: dict[str, list[Run]] = {c: [] for c in ["bare", *cases]}
    tmp = Path(tempfile.mkdtemp(prefix="certpin-bench-ingest-"))
    for r in range(rounds):
        for case in ["bare", *cases]:
            bodies = make_bodies(total)
            db, schema = database(case, tmp / f"round{r}.sqlite3", pg)
            server = Server(case if case == "bare" else "collector", db, schema, http)
            try:
                result = drive(case, server, bodies, clients)
            finally:
                server.stop()
            if db is not None:
                rows = stored(db, schema)
                acked = result.statuses.get(201, 0)
                warm = max(clients, total // 10 - (total // 10) % clients)
                assert rows == acked + warm, (case, rows, acked, warm)
                if schema is not None:
                    drop_schema(db, schema)
            bad = {s: n for s, n in result.statuses.items() if s not in (201, 204)}
            print(
                f"round {r + 1} {case:8s} {result.rate:8.0f} req/s  p50 {result.pct(0.5):6.1f} ms"
                f"  p99 {result.pct(0.99):6.1f} ms  statuses {result.statuses}"
                + (f"  UNEXPECTED {bad}" if bad else "")
            )
            runs[case].append(result)
    bare_rate = statistics.median(r.rate for r in runs["bare"])
    bare_p99 = statistics.median(r.pct(0.99) for r in runs["bare"])
    results = []
    for case in cases:
        rate = statistics.median(r.rate for r in runs[case])
        p50 = statistics.median(r.pct(0.5) for r in runs[case])
        p99 = statistics.median(r.pct(0.99) for r in runs[case])
        # Result's ratio is value/baseline with "<= goal": express throughput as the inverse
        # share (bare / collector <= 2 means collector >= 50 % of bare).
        results.append(
            Result(
                "collector_ingest",
                f"{case}: bare/collector req/s",
                bare_rate,
                rate,
                "req/s",
                goal_ratio=2.0,
            )
        )
        results.append(
            Result("collector_ingest", f"{case}: p99 latency", p99, bare_p99, "ms", goal_value=50.0)
        )
        # Each round's collector run follows its bare run: its share of that run is the
        # comparison least moved by the machine's drift (shown; the goal uses the medians).
        shares = " / ".join(
            f"{c.rate / b.rate:.0%}" for b, c in zip(runs["bare"], runs[case], strict=True)
        )
        print(
            f"{case}: {rate:.0f} durable reports/s = {rate / bare_rate:.1%} of bare "
            f"({bare_rate:.0f} req/s; per round {shares}); p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(bare p99 {bare_p99:.1f} ms)"
        )
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return results


def run_open(
    rounds: int = 3,
    seconds: float = 2.0,
    connections: int = 128,
    clients: int = 32,
    http: str = "h11",
) -> list[Result]:
    """Open-loop capacity of each server (`capacity`), interleaved per round; stored rows are
    checked against the 201s of every step."""
    pg = pg_url()
    cases = ["sqlite"] + (["postgres"] if pg else [])
    if pg is None:
        print("postgres: no server at 127.0.0.1:5432 (database 'test'); skipped")
    found: dict[str, list[float]] = {c: [] for c in ["bare", *cases]}
    tmp = Path(tempfile.mkdtemp(prefix="certpin-bench-ingest-"))
    for r in range(rounds):
        for case in ["bare", *cases]:
            db, schema = database(case, tmp / f"open{r}.sqlite3", pg)
            server = Server(case if case == "bare" else "collector", db, schema, http)
            try:
                rate, steps, warm = capacity(case, server, seconds, connections, clients)
            finally:
                server.stop()
            if db is not None:
                acked = warm.get(201, 0) + sum(s.statuses.get(201, 0) for s in steps)
                rows = stored(db, schema)
                assert rows == acked, (case, rows, acked)
                if schema is not None:
                    drop_schema(db, schema)
            every = [warm, *(s.statuses for s in steps)]
            bad = {k: n for st in every for k, n in st.items() if k not in (201, 204)}
            print(
                f"round {r + 1} {case:8s} sustains {rate:6.0f} req/s with p99 < 50 ms"
                + (f"  UNEXPECTED {bad}" if bad else ""),
                flush=True,
            )
            found[case].append(rate)
    bare = statistics.median(found["bare"])
    results = []
    for case in cases:
        rate = statistics.median(found[case])
        shares = " / ".join(f"{c / b:.0%}" for b, c in zip(found["bare"], found[case], strict=True))
        print(
            f"{case}: sustains {rate:.0f} durable reports/s = {rate / bare:.1%} of bare "
            f"({bare:.0f} req/s; per round {shares})"
        )
        results.append(
            Result(
                "collector_ingest",
                f"{case}: open loop, bare/collector sustained req/s",
                bare,
                rate,
                "req/s",
                goal_ratio=2.0,
            )
        )
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--http", choices=["h11", "httptools"], default="h11")
    parser.add_argument(
        "--open-loop",
        action="store_true",
        help="measure each server's sustained rate under open-loop arrivals instead",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per open-loop step")
    parser.add_argument("--connections", type=int, default=128, help="open-loop pool")
    parser.add_argument("--serve", choices=["bare", "collector"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.db, args.schema, args.http)
        return 0
    import platform

    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {args.clients} clients x "
        f"{args.per_client} reports, {args.rounds} rounds, HTTP parser {args.http} "
        f"(bench dir {BENCH.name}/)"
    )
    if args.open_loop:
        results = run_open(args.rounds, args.seconds, args.connections, args.clients, args.http)
    else:
        results = run(args.clients, args.per_client, args.rounds, args.http)
    print_table(results, "collector ingest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
