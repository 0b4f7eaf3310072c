"""Shared helpers for the benchmarks: statistics, results, and a throwaway PKI.

Every benchmark compares against a baseline measured *in the same run, interleaved* with the
measured variant, because these machines are noisy (2 shared cores): absolute numbers drift
from run to run, ratios measured side by side do not drift nearly as much.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Result:
    """One line of the summary table: ``value`` vs ``baseline``, and the goal for the ratio or
    for the absolute value (``goal_value``, same unit as ``value``)."""

    bench: str
    case: str
    value: float
    baseline: float
    unit: str
    goal_ratio: float | None = None
    goal_value: float | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool | None:
        if self.goal_ratio is None and self.goal_value is None:
            return None
        ok = True
        if self.goal_ratio is not None:
            ok = ok and self.ratio <= self.goal_ratio
        if self.goal_value is not None:
            ok = ok and self.value <= self.goal_value
        return ok

    def goal(self) -> str:
        parts = []
        if self.goal_ratio is not None:
            parts.append(f"ratio <= {self.goal_ratio:g}")
        if self.goal_value is not None:
            parts.append(f"<= {self.goal_value:g} {self.unit}")
        return ", ".join(parts) or "-"


def median(values: list[float]) -> float:
    return statistics.median(values)


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def print_table(results: list[Result], title: str = "") -> None:
    if title:
        print(f"\n{title}")
    header = ("benchmark", "case", "value", "baseline", "ratio", "goal", "met")
    rows = [
        (
            r.bench,
            r.case,
            f"{r.value:,.3f} {r.unit}",
            f"{r.baseline:,.3f} {r.unit}",
            f"{r.ratio:.3f}",
            r.goal(),
            {True: "yes", False: "NO", None: "-"}[r.met],
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


def test_pki() -> object:
    """The test suite's PKI builder (tests/_support/pki.py): root -> intermediate -> leaf."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests._support import pki

    return pki
