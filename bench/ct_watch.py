"""CT watching throughput: ``certpin ct watch --once`` against Debian's certspotter, one log.

A server process (this file with ``--serve``) builds an RFC 6962 log of N entries (default
100 000: a few hundred distinct certificates, each logged many times with its own timestamp, so
every entry is its own leaf; 1 % are for the watched name) and serves it on loopback with the
project's test log server (examples/demo/demo_ctservers.py). In the same run, interleaved
round by round:

- certpin:     ``certpin ct watch --once --json`` as a subprocess (cold start included), every
               entry fetched, hashed into the tree and checked against the signed root, names
               read, covered certificates decided by the verdict;
- certspotter: ``certspotter -logs LIST -watchlist W`` as a subprocess with a fresh state
               directory, timed until its state file says it verified the whole tree (it
               does not exit by itself; polled every 20 ms).

Both fetch the same log over the same loopback HTTP server; certspotter asks for 1 000 entries
per request (its default), certpin too. Reports entries/second of each (medians) and
certpin/certspotter. Goal: >= 1x.

    .venv/bin/python bench/ct_watch.py [--entries 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BENCH, ROOT, Result, median, print_table

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "examples" / "demo")]
CLI = ROOT / "tests" / "ct" / "_cli.py"
NAME = "api.example.com"


def _serve(entries: int, directory: Path) -> None:
    """Build the log, write the policy, log list and watch list, print the URL, serve."""
    from demo_ctlog import TestLog
    from demo_ctservers import RFC6962Server

    from _support.pki import make_key, new_root, spki_pin
    from ct._certs import issuance

    root = new_root("Bench Root")
    ca = root.issue_intermediate("Bench Intermediate")
    primary, backup = make_key("p256"), make_key("p256")
    distinct = [
        issuance(ca, f"www{n}.unrelated.example", f"shop{n}.unrelated.example") for n in range(300)
    ]
    covered = [issuance(ca, NAME, key=primary), issuance(ca, NAME)]  # one pinned, one rogue
    certs = [(i.final(), i.chain()) for i in distinct]
    watched = [(i.final(), i.chain()) for i in covered]
    log = TestLog()
    for n in range(entries):
        cert, chain = watched[n // 100 % 2] if n % 100 == 42 else certs[n % len(certs)]
        log.add_x509(cert, chain)
    pins = [spki_pin(primary.public_key()), spki_pin(backup.public_key())]
    (directory / "policy.json").write_text(json.dumps({"domains": {NAME: {"pins": pins}}}))
    (directory / "watchlist").write_text(NAME + "\n")
    server = RFC6962Server(log)
    server.max_entries = 1000
    with server:
        listing = {
            "operators": [
                {"name": "bench", "logs": [log.log_list_entry(server.url)], "tiled_logs": []}
            ]
        }
        (directory / "list.json").write_text(json.dumps(listing))
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


def _certpin(directory: Path) -> float:
    argv = [
        sys.executable,
        str(CLI),
        "ct",
        "watch",
        "--policy",
        str(directory / "policy.json"),
        "--log-list",
        str(directory / "list.json"),
        "--once",
        "--json",
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 1:  # the rogue certificate is there: exit status 1
        raise SystemExit(f"certpin ct watch exited {done.returncode}: {done.stderr}")
    return elapsed


def _certspotter(directory: Path, entries: int) -> float:
    state = directory / "certspotter-state"
    shutil.rmtree(state, ignore_errors=True)
    env = dict(
        os.environ,
        CERTSPOTTER_CONFIG_DIR=str(directory / "certspotter-config"),
        CERTSPOTTER_STATE_DIR=str(state),
    )
    argv = [
        "certspotter",
        "-logs",
        str(directory / "list.json"),
        "-watchlist",
        str(directory / "watchlist"),
        "-state_dir",
        str(state),
        "-no_save",
        "-stdout",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None:
            for path in state.glob("logs/*/state.json"):
                try:
                    sth = json.loads(path.read_text()).get("verified_sth") or {}
                except ValueError:  # caught mid-write
                    continue
                if sth.get("tree_size") == entries:
                    return time.perf_counter() - start
            time.sleep(0.02)
        raise SystemExit(f"certspotter exited {proc.returncode}: {proc.stderr.read()!r}")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def run(entries: int = 100_000, runs: int = 3) -> list[Result]:
    if shutil.which("certspotter") is None:
        print("ct_watch: certspotter is not installed (make system-deps); skipped")
        return []
    with tempfile.TemporaryDirectory(prefix="certpin-bench-ct-") as tmp:
        directory = Path(tmp)
        (directory / "certspotter-config").mkdir()
        start = time.perf_counter()
        server = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "ct_watch.py"),
                "--serve",
                str(directory),
                "--entries",
                str(entries),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            print(f"{entries} entries served at {url} after {time.perf_counter() - start:.0f} s")
            times: dict[str, list[float]] = {"certpin": [], "certspotter": []}
            for n in range(runs):
                order = ["certpin", "certspotter"] if n % 2 == 0 else ["certspotter", "certpin"]
                for name in order:
                    took = (
                        _certpin(directory)
                        if name == "certpin"
                        else _certspotter(directory, entries)
                    )
                    times[name].append(took)
                    print(
                        f"  run {n + 1}: {name:<11} {took:6.2f} s  {entries / took:9,.0f} entries/s"
                    )
        finally:
            server.communicate("", timeout=30)
    ours, theirs = median(times["certpin"]), median(times["certspotter"])
    print(
        f"certpin {entries / ours:,.0f} entries/s, certspotter {entries / theirs:,.0f} entries/s: "
        f"{theirs / ours:.2f}x"
    )
    return [
        Result(
            "ct_watch",
            f"{entries} entries, seconds (certspotter = baseline)",
            ours,
            theirs,
            "s",
            goal_ratio=1.0,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.entries, Path(args.serve))
        return 0
    print_table(run(args.entries, args.runs), title="Summary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
