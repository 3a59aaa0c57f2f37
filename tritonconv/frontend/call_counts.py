"""The counts `tritonconv.stats()` reports: calls of patched modules and functions, served by
tritonconv or given to torch.

An eager call is counted where it is served (`fallback.serve`). Inside a `torch.compile` graph or a
`torch.export` program no Python of tritonconv's runs around the op, so a served call is counted by
the op itself: while a patched call is traced, `compiled_label()` names it ('conv2d', 'conv3d', ...),
the op records that name as a string argument, and counts it each time the graph runs it. A call
the graph gives to torch (no tritonconv op) is counted when it is traced, once per compilation.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..problem.runtime import assume_constant_result

logger = logging.getLogger("tritonconv")
TRITONCONV = "tritonconv"
_counts: Counter[tuple[str, str]] = Counter()  # (op, 'tritonconv' or the fallback's reason) -> calls
_routes: Counter[tuple[str, str]] = Counter()  # (op, variant of its forward) -> eager calls served
_label = ""  # the patched op being traced, which the tritonconv op it traces to counts at run time


def count(op: str, outcome: str = TRITONCONV) -> None:
    _counts[op, outcome] += 1


def count_route(op: str, route: str) -> None:
    _routes[op, str(route)] += 1


def counted(op: str, outcome: str) -> bool:
    return (op, outcome) in _counts


def set_compiled_label(op: str) -> None:
    """Name the patched op being traced ('' when none is); the traced ops read it (`compiled_label`)."""
    global _label
    _label = op


def compiled_label() -> str:
    return _label


def count_fallback(op: str, reason: str) -> None:
    """Count a call given to torch, logging its reason the first time."""
    if not counted(op, reason):
        logger.warning("tritonconv: %s served by torch: %s", op, reason)
    count(op, reason)


@assume_constant_result
def count_traced_fallback(op: str, reason: str) -> bool:
    """Count a call a graph being traced gives to torch, once per trace: run at trace time (its
    result, always True, a constant of the graph), never inside the graph."""
    count_fallback(op, f"{reason} (in a compiled graph: counted once per compilation)")
    return True


def stats(routes: bool = False) -> dict[str, dict]:
    """Calls through patched modules and functions since the last `reset_stats()`, per op:
    `{'conv2d': {'tritonconv': 120, 'torch': 3, 'fallbacks': {reason: 3}}, ...}`, compiled graphs'
    calls included (module docstring). With `routes`, each op also says which kernel route served
    its eager forward calls: `'routes': {'depthwise_1d': 48, ...}` (a transposed convolution's
    forward, an input gradient, and calls inside compiled graphs are not in it)."""
    report: dict[str, dict] = {}
    for (op, outcome), calls in sorted(_counts.items()):
        entry = report.setdefault(op, {TRITONCONV: 0, "torch": 0, "fallbacks": {}})
        if outcome == TRITONCONV:
            entry[TRITONCONV] += calls
        else:
            entry["torch"] += calls
            entry["fallbacks"][outcome] = calls
    if routes:
        for entry in report.values():
            entry["routes"] = {}
        for (op, route), calls in sorted(_routes.items()):
            report[op]["routes"][route] = calls
    return report


def reset_stats() -> None:
    """Forget the counts (and so log each fallback reason once more)."""
    _counts.clear()
    _routes.clear()
