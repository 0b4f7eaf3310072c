"""Size-doubling checks: does a parser's time grow linearly with its input?

A quadratic parser takes ~4x the time when its input doubles, so over three doublings (8x the
input) it takes ~64x; a linear one ~8x. The check times the small and the large input in turn
(interleaved, so a burst of load on a shared machine hits both), keeps the best run of each and
allows up to ``limit`` (default 32x for 8x the input: four times the linear figure, half the
quadratic 64x). If the first round fails it measures again before failing, since a single burst
of load can still land on the large runs only. This is a complexity check, not a speed
benchmark: speed lives in bench/.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(func: Callable[[Any], object], arg: Any, repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs of ``func(arg)``, in seconds (exceptions are part of it)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            func(arg)
        except Exception:  # noqa: BLE001 - a rejecting parser must be linear too
            pass
        best = min(best, time.perf_counter() - start)
    return best


def assert_near_linear(
    func: Callable[[Any], object],
    make_input: Callable[[int], Any],
    *,
    base: int,
    factor: int = 8,
    limit: float | None = None,
    min_seconds: float = 0.002,
) -> tuple[float, float]:
    """Assert ``func`` on ``make_input(base * factor)`` takes < ``limit`` x ``make_input(base)``.

    Args:
        func: the parser under test; it may raise (rejecting is part of what is timed).
        make_input: builds an input of (roughly) the given size.
        base: the small size; choose it so one run takes at least a few milliseconds, or the
            ratio measures timer noise.
        factor: how much bigger the large input is (default 8: three doublings).
        limit: the allowed time ratio; default ``4 * factor``.
        min_seconds: the small run's time is floored at this, so noise on a tiny run cannot
            inflate the ratio.

    Returns:
        (small time, large time) in seconds.
    """
    limit = 4.0 * factor if limit is None else limit
    small_input, large_input = make_input(base), make_input(base * factor)
    small = large = float("inf")
    for _attempt in range(4):  # a busy machine may stall one round; a quadratic parser fails all
        for _ in range(3):
            small = min(small, best_time(func, small_input, repeat=1))
            large = min(large, best_time(func, large_input, repeat=1))
        ratio = large / max(small, min_seconds)
        if ratio < limit:
            break
    assert ratio < limit, (
        f"time grew {ratio:.1f}x for {factor}x the input ({small * 1e3:.2f} ms -> "
        f"{large * 1e3:.2f} ms): not linear (allowed < {limit:.0f}x)"
    )
    return small, large
