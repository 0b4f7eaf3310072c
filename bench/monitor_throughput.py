"""Endpoint monitor throughput: 1 000 loopback TLS endpoints, monitor vs. a bare handshake loop.

A server process (this file with ``--serve``) listens on 1 000 ports with asyncio, each port
serving its own leaf certificate (one shared intermediate, as for a fleet behind one CA). In the
client process, two variants check every endpoint once per run, with the same concurrency,
interleaved run by run (rotating order) so drift hits both equally:

- bare:    ``asyncio.open_connection(ssl=ctx)`` + close, per endpoint, under a semaphore: the
           ceiling (TCP connect + TLS 1.3 handshake + CA verification, nothing else);
- monitor: ``certpin.lifecycle.monitor.check.run_once`` (the library behind ``certpin monitor``):
           the same
           handshake, plus the verified/served chains, the verdict, parsing each certificate
           for subjects and expiry, and a report per endpoint. Its certificate cache is
           cleared before each run (the cron case: every leaf is seen for the first time).

Reports endpoints/second for each (medians over the runs) and monitor/bare (the median of the
per-run ratios). Goal: >= 50 %.

    .venv/bin/python bench/monitor_throughput.py [--endpoints 1000] [--runs 7] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import BENCH, Result, median, print_table, test_pki

HOST = "127.0.0.1"


def raise_fd_limit(needed: int) -> None:
    """1 000 listening sockets (server) or up to `concurrency` connections plus the rest."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        raise SystemExit(f"need {needed} file descriptors, the hard limit is {hard}")


# -- server process -------------------------------------------------------------------------


class _Quiet(asyncio.Protocol):
    """Completes the handshake (asyncio's SSL layer), then closes when the client does."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # close our side too


async def _serve(manifest: Path) -> None:
    pairs = json.loads(manifest.read_text())
    loop = asyncio.get_running_loop()
    # Aborted handshakes (a client closing early) are not worth a log line here.
    loop.set_exception_handler(lambda _loop, _context: None)
    ports = []
    servers = []
    for certfile, keyfile in pairs:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        # No session tickets: the client never resumes, and the server's CPU is shared by both
        # variants; keep its per-handshake work to the handshake itself.
        ctx.num_tickets = 0
        server = await loop.create_server(_Quiet, HOST, 0, ssl=ctx, backlog=256)
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps(ports), flush=True)
    # Exit when the parent closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)


# -- client variants ------------------------------------------------------------------------


def plain_context(cafile: Path) -> ssl.SSLContext:
    """The bare loop's context: verifies like certpin's (strict, no partial chains)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


async def bare_run(ports: list[int], ctx: ssl.SSLContext, concurrency: int) -> int:
    """Handshake with every port (bounded concurrency); returns how many succeeded."""
    gate = asyncio.Semaphore(concurrency)

    async def one(port: int) -> bool:
        async with gate:
            try:
                async with asyncio.timeout(5):
                    _r, writer = await asyncio.open_connection(
                        HOST, port, ssl=ctx, server_hostname=HOST, ssl_handshake_timeout=5
                    )
            except (OSError, ssl.SSLError):
                return False
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, ssl.SSLError, TimeoutError):
                pass
            return True

    return sum(await asyncio.gather(*(one(p) for p in ports)))


async def monitor_run(ports: list[int], policy: Any, ctx: ssl.SSLContext, concurrency: int) -> int:
    from certpin.lifecycle.monitor.check import Target, _source, run_once

    _source.cache_clear()
    targets = [Target(HOST, p) for p in ports]
    reports = await run_once(targets, policy, context=ctx, concurrency=concurrency, timeout=5)
    return sum(1 for r in reports if r.status == "ok")


def timed(coro: Any) -> tuple[float, float, int]:
    """(wall seconds, client CPU seconds, endpoints ok) for one run."""
    start, cpu = time.perf_counter(), time.process_time()
    good = asyncio.run(coro)
    return time.perf_counter() - start, time.process_time() - cpu, good


# -- driver ---------------------------------------------------------------------------------


def _make_endpoints(directory: Path, n: int) -> tuple[Path, Any, Path]:
    """Root -> intermediate -> n leaves (P-256) on disk; returns (cafile, policy, manifest)."""
    import certpin

    pki_mod: Any = test_pki()
    root = pki_mod.new_root("Bench Root CA")
    intermediate = root.issue_intermediate("Bench Intermediate")
    pairs = []
    for i in range(n):
        leaf = intermediate.issue_leaf("localhost", HOST, cn=f"endpoint-{i}")
        certfile, keyfile = leaf.write(directory / "leaves")
        pairs.append([str(certfile), str(keyfile)])
    cafile = root.write(directory / "root.pem")
    manifest = directory / "endpoints.json"
    manifest.write_text(json.dumps(pairs))
    backup = "sha256/" + "A" * 42 + "E="  # a spare pin: never matches
    policy = certpin.Policy.from_dict(
        {"domains": {HOST: {"pins": [backup, pki_mod.spki_pin(intermediate)]}}}
    )
    return cafile, policy, manifest


def run(endpoints: int = 1000, runs: int = 7, concurrency: int = 50) -> list[Result]:
    from certpin.tls.context import verifying_context

    raise_fd_limit(endpoints + concurrency + 256)
    with tempfile.TemporaryDirectory(prefix="certpin-bench-monitor-") as tmp:
        start = time.perf_counter()
        cafile, policy, manifest = _make_endpoints(Path(tmp), endpoints)
        server = subprocess.Popen(
            [sys.executable, str(BENCH / "monitor_throughput.py"), "--serve", str(manifest)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            ports: list[int] = json.loads(server.stdout.readline())
            print(
                f"{len(ports)} endpoints up in {time.perf_counter() - start:.1f} s; "
                f"{runs} runs per variant, concurrency {concurrency}"
            )
            bare_ctx = plain_context(cafile)
            monitor_ctx = verifying_context(cafile=cafile)
            rates: dict[str, list[float]] = {"bare": [], "monitor": []}
            cpu_us: dict[str, list[float]] = {"bare": [], "monitor": []}
            ratios = []
            # One warm-up run each (imports, first-use caches), not counted.
            timed(bare_run(ports, bare_ctx, concurrency))
            timed(monitor_run(ports, policy, monitor_ctx, concurrency))
            for i in range(runs):
                order = ["bare", "monitor"] if i % 2 == 0 else ["monitor", "bare"]
                this: dict[str, float] = {}
                for variant in order:
                    if variant == "bare":
                        elapsed, cpu, good = timed(bare_run(ports, bare_ctx, concurrency))
                    else:
                        elapsed, cpu, good = timed(
                            monitor_run(ports, policy, monitor_ctx, concurrency)
                        )
                    if good != len(ports):
                        raise RuntimeError(f"{variant}: only {good}/{len(ports)} endpoints ok")
                    this[variant] = len(ports) / elapsed
                    rates[variant].append(this[variant])
                    cpu_us[variant].append(cpu / len(ports) * 1e6)
                ratios.append(this["monitor"] / this["bare"])
                print(
                    f"  run {i + 1}: bare {this['bare']:,.0f}/s  monitor {this['monitor']:,.0f}/s"
                    f"  ratio {ratios[-1]:.3f}"
                )
        finally:
            if server.stdin is not None:
                server.stdin.close()
            server.wait(10)
    bare, mon = median(rates["bare"]), median(rates["monitor"])
    # Headline: the median of per-run ratios. Runs next to each other see the same machine
    # load; medians of each variant taken separately can pair a quiet run with a busy one.
    ratio = statistics.median(ratios)
    print(
        f"\nmedian endpoints/s: bare {bare:,.0f}, monitor {mon:,.0f}; monitor/bare: median of "
        f"per-run ratios {ratio:.3f} (ratio of medians {mon / bare:.3f}); "
        f"goal >= 0.50: {'met' if ratio >= 0.5 else 'MISSED'}"
    )
    cpu_bare, cpu_mon = median(cpu_us["bare"]), median(cpu_us["monitor"])
    print(
        f"client CPU per endpoint (median): bare {cpu_bare:,.0f} us, monitor {cpu_mon:,.0f} us "
        f"(+{cpu_mon - cpu_bare:,.0f} us); CPU-bound ceiling for the monitor: "
        f"{cpu_bare / cpu_mon:.3f} of the bare loop"
    )
    # As a Result (time per endpoint, lower is better): monitor/bare <= 2 == throughput >= 50 %.
    per_endpoint = 1000 / bare
    return [
        Result(
            "monitor_throughput",
            f"{endpoints} endpoints, concurrency {concurrency}",
            per_endpoint / ratio,
            per_endpoint,
            "ms/endpoint",
            goal_ratio=2.0,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="MANIFEST", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    if args.serve:
        raise_fd_limit(len(json.loads(Path(args.serve).read_text())) + 512)
        asyncio.run(_serve(Path(args.serve)))
        return 0
    print_table(run(args.endpoints, args.runs, args.concurrency), title="Summary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
