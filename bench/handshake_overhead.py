"""Per-connection cost of certpin's pin check, on loopback, against the same TLS without it.

Each connection: TCP connect, TLS handshake, ``GET /``, read the response, close; the server is a
separate process (bench/tls_server.py) so it does not share the GIL with the client. Variants,
interleaved connection by connection (rotating order) so drift hits them equally:

- plain:   ``ssl.create_default_context(cafile=root)`` with the flags certpin sets
           (VERIFY_X509_STRICT on, VERIFY_X509_PARTIAL_CHAIN off): isolates the pin check;
- pinned:  ``certpin.create_default_context(policy, cafile=root)``, the pin on the intermediate
           (the leaf is checked first and does not match, so the whole chain is walked);
- dynamic: the same, with the policy given as a callable (a "provider"), asked per handshake;
- injected: the plain recipe (``ssl.create_default_context``) built while
           ``certpin.inject_into_ssl(policy)`` is in force: process-wide pinning (issue 16).

Reports the median per-connection wall time of each, the ratio to plain, and the median of the
per-round ratios; the client's CPU time per connection; and the time spent inside the hook.
Goal: pinned/plain wall time <= 1.01.

    .venv/bin/python bench/handshake_overhead.py [--rounds 20] [--per-round 50]
"""

from __future__ import annotations

import argparse
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import BENCH, Result, median, print_table, quartiles, test_pki

import certpin

HOST = "localhost"
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def plain_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def one_connection(ctx: ssl.SSLContext, port: int) -> tuple[int, int]:
    """(wall, client CPU) nanoseconds for connect + handshake + GET + read + close."""
    start, cpu = time.perf_counter_ns(), time.thread_time_ns()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(REQUEST)
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
    elapsed, cpu = time.perf_counter_ns() - start, time.thread_time_ns() - cpu
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response {data[:40]!r}")
    return elapsed, cpu


def hook_cost(ctx: ssl.SSLContext, port: int, n: int = 300) -> dict[str, float]:
    """Median µs spent in certpin's hook during real handshakes, and in its two parts.

    Wraps the private hook (``certpin.tls.context._enforce``) and the chain fetch for the duration;
    the SSL state is cold from the handshake, so this is more than a tight loop would show.
    """
    from certpin.tls import context as _context

    times: dict[str, list[int]] = {"hook": [], "chain fetch": []}
    enforce, chains = _context._enforce, _context.verified_chain

    def timed_enforce(conn: Any, context: Any) -> None:
        t0 = time.perf_counter_ns()
        enforce(conn, context)
        times["hook"].append(time.perf_counter_ns() - t0)

    def timed_chains(conn: Any) -> Any:
        t0 = time.perf_counter_ns()
        result = chains(conn)
        times["chain fetch"].append(time.perf_counter_ns() - t0)
        return result

    _context._enforce, _context.verified_chain = timed_enforce, timed_chains  # type: ignore[assignment]
    try:
        for _ in range(n):
            one_connection(ctx, port)
    finally:
        _context._enforce, _context.verified_chain = enforce, chains  # type: ignore[assignment]
    out = {k: median(v) / 1000 for k, v in times.items()}
    out["verdict + checks"] = out["hook"] - out["chain fetch"]
    return out


def run(rounds: int = 20, per_round: int = 50) -> list[Result]:
    pki = test_pki()
    with tempfile.TemporaryDirectory(prefix="certpin-bench-") as tmp:
        files = pki.write_pki_files(pki.make_pki(), tmp)  # type: ignore[attr-defined]
        intermediate_pin = certpin.Pin.for_certificate(_der(files.intermediate_ca))
        backup = certpin.Pin.for_spki(b"backup key that is not in the chain")
        policy = certpin.Policy.from_dict(
            {"domains": {HOST: {"pins": [str(intermediate_pin), str(backup)]}}}
        )
        contexts: dict[str, ssl.SSLContext] = {
            "plain": plain_context(files.root_ca),
            "pinned": certpin.create_default_context(policy, cafile=files.root_ca),
            "dynamic": certpin.create_default_context(lambda: policy, cafile=files.root_ca),
        }
        certpin.inject_into_ssl(policy)
        try:  # a context made while injected keeps pinning after extract_from_ssl
            contexts["injected"] = plain_context(files.root_ca)
        finally:
            certpin.extract_from_ssl()
        assert type(contexts["injected"]).__name__ == "InjectedContext"
        server = subprocess.Popen(
            [sys.executable, "-m", "tls_server", str(files.certfile), str(files.keyfile)],
            cwd=BENCH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            return _measure(contexts, port, rounds, per_round)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(10)
            server.stdout.close()  # type: ignore[union-attr]


def _der(pem_file: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_file.read_text())


def _measure(
    contexts: dict[str, ssl.SSLContext],
    port: int,
    rounds: int,
    per_round: int,
) -> list[Result]:
    names = list(contexts)
    for _ in range(20):  # warm-up: caches, the server's first accept, page faults
        for name in names:
            one_connection(contexts[name], port)
    samples: dict[str, list[int]] = {name: [] for name in names}
    cpu: dict[str, list[int]] = {name: [] for name in names}
    round_ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    for r in range(rounds):
        this_round: dict[str, list[int]] = {name: [] for name in names}
        for i in range(per_round):
            shift = (r * per_round + i) % len(names)
            for name in names[shift:] + names[:shift]:
                wall, used = one_connection(contexts[name], port)
                this_round[name].append(wall)
                cpu[name].append(used)
        for name in names:
            samples[name] += this_round[name]
        for name in names[1:]:
            round_ratios[name].append(median(this_round[name]) / median(this_round["plain"]))
    base = median(samples["plain"]) / 1000
    print(f"handshake_overhead: {rounds} rounds x {per_round} connections per variant, interleaved")
    for name in names:
        ms = [s / 1e6 for s in samples[name]]
        q1, q3 = quartiles(ms)
        line = f"  {name:8} median {median(ms):.3f} ms/connection (IQR {q1:.3f}-{q3:.3f})"
        if name != "plain":
            rr = round_ratios[name]
            line += (
                f"  ratio {median(samples[name]) / 1000 / base:.4f}"
                f"  (per round: median {median(rr):.4f}, min {min(rr):.4f}, max {max(rr):.4f})"
            )
        print(line)
    cpu_base = median(cpu["plain"]) / 1000
    print(
        "  client CPU per connection (thread time, medians): "
        + ", ".join(f"{name} {median(cpu[name]) / 1000:.1f} µs" for name in names)
        + f"; pinned - plain = {median(cpu['pinned']) / 1000 - cpu_base:.1f} µs"
    )
    hook = hook_cost(contexts["pinned"], port)
    print(
        "  inside the pinned handshakes: hook {hook:.1f} µs = chain fetch {chain fetch:.1f} µs"
        " + verdict and checks {verdict + checks:.1f} µs (medians)".format_map(hook)
    )
    results = [
        Result(
            "handshake",
            f"{name} connection",
            median(samples[name]) / 1000,
            base,
            "µs",
            goal_ratio=1.01,
        )
        for name in names[1:]
    ]
    results.append(
        Result("handshake", "client CPU, pinned", median(cpu["pinned"]) / 1000, cpu_base, "µs")
    )
    results.append(Result("handshake", "hook alone", hook["hook"], base, "µs"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    args = parser.parse_args(argv)
    print_table(run(args.rounds, args.per_round))
    return 0


if __name__ == "__main__":
    sys.exit(main())
