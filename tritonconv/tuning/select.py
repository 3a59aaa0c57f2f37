"""The noise-aware choice among timed configs: one rule, so two runs and two ranks agree.

Each candidate is timed several times. The fastest median sets the bar; every candidate whose
median lies within the measured spread of that fastest one (or within `NOISE_FLOOR` of it, where a
quiet machine measures no spread at all) is tied with it, and ties go to the earliest candidate in
the space's fixed order. Two runs whose timings differ only by noise therefore pick the same config.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NOISE_FLOOR = 0.02


@dataclass(frozen=True)
class Choice:
    index: int
    median_ms: float
    spread_ms: float
    tied: tuple[int, ...]


def spread(samples: Sequence[float]) -> float:
    """Half the range between the 20th and 80th percentiles: robust to one stray sample."""
    if len(samples) < 2:
        return 0.0
    quantiles = statistics.quantiles(samples, n=5, method="inclusive")
    return (quantiles[3] - quantiles[0]) / 2


def choose(timings: Mapping[int, Sequence[float]]) -> Choice:
    """Pick among candidates given as {position in the space's order: [ms, ...]}; candidates that
    failed are simply absent. Raises ValueError when none is left."""
    if not timings:
        raise ValueError("no candidate ran: every config failed")
    medians = {index: statistics.median(samples) for index, samples in timings.items()}
    fastest = min(medians, key=lambda index: (medians[index], index))
    margin = max(spread(timings[fastest]), NOISE_FLOOR * medians[fastest])
    tied = tuple(sorted(index for index, median in medians.items() if median <= medians[fastest] + margin))
    return Choice(index=tied[0], median_ms=medians[tied[0]], spread_ms=margin, tied=tied)
