"""Cold start of ``certpin pin FILE`` against the cost of importing cryptography's X.509 module.

Each run is a new process (what a user or a shell script pays). Interleaved, N runs each,
median wall time; the baseline is ``python -c "import cryptography.x509"``, the least any
certificate tool built on cryptography can do. Goal: ratio <= 2.

    .venv/bin/python bench/cli_cold_start.py [-n 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Result, median, print_table, quartiles, test_pki


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed * 1000


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
        names = list(variants)
        for i in range(n):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(_time(variants[name]))
    base = median(times["baseline"])
    print(f"cli_cold_start: {n} runs each, interleaved (median wall ms, IQR)")
    for name, values in times.items():
        q1, q3 = quartiles(values)
        print(
            f"  {name:22} {median(values):7.1f} ms  ({q1:.1f}-{q3:.1f})"
            f"  ratio {median(values) / base:.2f}"
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
