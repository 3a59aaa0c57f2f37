"""The noise-aware choice among timed configs: one rule, so two runs and two ranks agree.

Each candidate is timed several times. The fastest median sets the bar; every candidate whose
median lies within the measured spread of that fastest one (or within `NOISE_FLOOR` of it, where a
quiet machine measures no spread at all) is tied with it, and ties go to the earliest candidate in
the space's fixed order. Two runs whose timings differ only by noise therefore pick the same config.

torch's own convolution is weighed against the best Triton candidate the same way (`prefer_torch`):
it is chosen only when its median is below Triton's by more than the noise of either measurement,
so a tie keeps the Triton kernel and a layer is never left on a measurably slower kernel.
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


def prefer_torch(triton: Mapping[str, object] | None, torch_ms: float | None, torch_spread_ms: float | None) -> bool:
    """Whether torch's kernel (median `torch_ms`, `spread` `torch_spread_ms`; None: it did not run)
    beats the best Triton candidate (`triton`: its "median_ms" and "spread_ms", None when every
    candidate failed): its median lower by more than the larger of torch's spread, Triton's margin
    (`Choice.spread_ms`) and `NOISE_FLOOR` of Triton's median."""
    if torch_ms is None:
        return False
    if triton is None:
        return True
    triton_ms = float(triton["median_ms"])
    margin = max(torch_spread_ms or 0.0, float(triton["spread_ms"]), NOISE_FLOOR * triton_ms)
    return torch_ms < triton_ms - margin
