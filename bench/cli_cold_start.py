"""Cold start of ``certpin pin FILE`` against the cost of importing cryptography's X.509 module.

Each run is a new process (what a user or a shell script pays). Interleaved, N runs each,
median wall time; the baseline is ``python -c "import cryptography.x509"``, the least any
certificate tool built on cryptography can do. Goal: ratio <= 2.

The median CPU time (user + system) of the child processes is printed beside it: on a shared
machine under load the wall time also counts waiting for a core, the CPU time much less so.

    .venv/bin/python bench/cli_cold_start.py [-n 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Result, median, print_table, quartiles, test_pki


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(argv: list[str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run of `argv`."""
    cpu, start = _cpu(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    elapsed, used = time.perf_counter() - start, _cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed * 1000, used * 1000


def run(n: int = 15) -> list[Result]:
    if not (ROOT / "src" / "certpin" / "cli" / "main.py").exists():
        print("cli_cold_start: src/certpin/cli/main.py does not exist yet; skipped")
        return []
    pki = test_pki()
    script = Path(sys.executable).with_name("certpin")
    with tempfile.TemporaryDirectory(prefix="certpin-bench-") as tmp:
        cert = Path(tmp) / "leaf.pem"
        cert.write_bytes(pki.make_pki().leaf.pem())  # type: ignore[attr-defined]
        variants = {
            "baseline": [sys.executable, "-c", "import cryptography.x509"],
            "python -m certpin pin": [sys.executable, "-m", "certpin", "pin", str(cert)],
        }
        if script.exists():
            variants["certpin pin (script)"] = [str(script), "pin", str(cert)]
        for argv in variants.values():  # warm the OS file cache and .pyc files
            _time(argv)
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for i in range(n):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = _time(variants[name])
                times[name].append(wall)
                cpus[name].append(cpu)
    base, cpu_base = median(times["baseline"]), median(cpus["baseline"])
    print(f"cli_cold_start: {n} runs each, interleaved (median wall ms, IQR; median CPU ms)")
    for name, values in times.items():
        q1, q3 = quartiles(values)
        cpu = median(cpus[name])
        print(
            f"  {name:22} {median(values):7.1f} ms  ({q1:.1f}-{q3:.1f})"
            f"  ratio {median(values) / base:.2f}"
            f"   CPU {cpu:6.1f} ms  ratio {cpu / cpu_base:.2f}"
        )
    return [
        Result("cli_cold_start", name, median(values), base, "ms", goal_ratio=2.0)
        for name, values in times.items()
        if name != "baseline"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15)
    args = parser.parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    print_table(run(args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
