"""Timing helpers: best-of-N wall time, robust to a shared, noisy machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(fn: Callable[[], Any], repeat: int = 5, number: int = 1, warmup: int = 1,
              sync: Callable[[Any], Any] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Minimum over ``repeat`` runs of the mean time of ``number`` calls, in seconds.

    ``clock=time.process_time`` measures CPU time of this process (all its threads), which
    other jobs on a shared machine disturb far less than wall time.
    """
    for _ in range(warmup):
        out = fn()
        if sync:
            sync(out)
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        for _ in range(number):
            out = fn()
        if sync:
            sync(out)
        best = min(best, (clock() - t0) / number)
    return best


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
