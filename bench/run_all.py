"""Run every benchmark and print one summary table (``make bench``).

    .venv/bin/python bench/run_all.py [--quick]

``--quick`` runs fewer rounds (a smoke test of the benchmarks themselves, not figures to quote).
Figures, machine and goals: docs/benchmarks.md. Exit status 0 even when a goal is missed: a
benchmark on a shared 2-core machine reports, it does not gate.
"""

from __future__ import annotations

import argparse
import os
import platform
import ssl
import sys
import time

import bundle_load
import cli_cold_start
import handshake_overhead
import policy_lookup
from _common import Result, print_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION}, "
        f"{os.cpu_count()} CPUs, {platform.machine()} {platform.system()}"
    )
    start = time.perf_counter()
    results: list[Result] = []
    if args.quick:
        results += handshake_overhead.run(rounds=3, per_round=20)
        results += policy_lookup.run(sizes=(100, 10_000), repeats=5)
        results += cli_cold_start.run(n=3)
        results += bundle_load.run(rounds=3, per_round=20, repeats=10, fresh=3)
    else:
        results += handshake_overhead.run()
        results += policy_lookup.run()
        results += cli_cold_start.run()
        results += bundle_load.run()
    print_table(results, title=f"Summary ({time.perf_counter() - start:.0f} s)")
    missed = [r for r in results if r.met is False]
    if missed:
        names = "; ".join(f"{r.bench} {r.case}" for r in missed)
        print(f"\n{len(missed)} goal(s) missed: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
