"""Fail unless the pure core is at 100 % branch coverage (STYLE.md §14).

Reads the JSON report that `make test` writes (artifacts/coverage.json). Exclusions are allowed
only with a `# Defensive:` comment saying why, so the gate counts raw statements and branches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CORE = (
    # The pure core (certpin/core/) and the error tree.
    "core/der.py",
    "core/pins.py",
    "core/hosts.py",
    "core/policy.py",
    "core/schema.py",
    "core/verdict.py",
    "_errors.py",
    # STYLE §14: bundle verification is held to the same bar.
    "dynamic/bundle.py",
    "dynamic/jws.py",
)


def _key(name: str) -> str | None:
    """The CORE entry a report path names (``…/certpin/core/pins.py`` -> ``core/pins.py``)."""
    parts = Path(name).parts
    if "certpin" not in parts:
        return None
    rel = "/".join(parts[len(parts) - parts[::-1].index("certpin") :])
    return rel if rel in CORE else None


def main(path: str = "artifacts/coverage.json") -> int:
    report = json.loads(Path(path).read_text())
    failed = False
    seen = set()
    for name, data in sorted(report["files"].items()):
        key = _key(name)
        if key is None:
            continue
        seen.add(key)
        s = data["summary"]
        missing = s["missing_lines"] + s.get("missing_branches", 0)
        print(f"coverage gate: {name}: {s['percent_covered_display']}%")
        if missing:
            failed = True
            print(f"  missing lines {data['missing_lines']}", file=sys.stderr)
    for name in sorted(set(CORE) - seen):
        failed = True
        print(f"coverage gate: {name} is missing from the report", file=sys.stderr)
    if failed:
        print("coverage gate: the core must stay at 100% branch coverage", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
