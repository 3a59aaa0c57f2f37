"""The few candidates a short GPU window times per (problem, pass), chosen by the static cost model.

A full tuning space holds tens to hundreds of configs per route; a 15-minute GPU window can time
about ten per (layer, pass) of a network. `pruned` picks them without running anything:
- the untimed rule's choice (its route at its heuristic config), so the tuned table can only beat
  what runs today;
- the TMA route at its heuristic config where it applies, so the new Hopper kernels are measured
  at least once on every layer they serve;
- the cost model's `top_k` fastest candidates over every modelled route's space together
  (`cost_model.rank`), routes competing on the model's seconds;
- for a route the model does not describe (`cost_model.UNMODELLED`: no 2-D GEMM), `top_k` of its
  space spread evenly over the space's order.
"""

from __future__ import annotations

import dataclasses

from ..problem.arithmetic import ConvProblem
from ..problem.config import KernelConfig
from ..problem.devices import DEFAULT_ARCH, GpuArch
from ..routes.registry import Variant, rule_variant, spec, tuned_variants
from . import cost_model
from .space import candidates

HEURISTIC = "heuristic"
TMA_HEURISTIC = "tma heuristic"
SPREAD = "spread"
TORCH = "torch"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One (route, config) to time and why it was picked: `HEURISTIC`, `TMA_HEURISTIC`, `SPREAD`,
    `TORCH` (torch's own convolution, timed beside every tuned problem) or `model #i` (its rank by the
    cost model, 1 = the model's fastest)."""

    variant: str
    config: KernelConfig
    why: str
    model_rank: int | None = None


def pruned(
    problem: ConvProblem, pass_name: str, top_k: int, arch: GpuArch = DEFAULT_ARCH,
    device: cost_model.DeviceModel = cost_model.H200,
) -> list[Candidate]:  # fmt: skip
    """At most `top_k` + 2 candidates for a GEMM-only problem (module docstring), no (route, config) twice."""
    variants = tuned_variants(problem, pass_name)
    rule = rule_variant(problem, pass_name)
    chosen = [Candidate(rule, spec(pass_name, rule).heuristic(problem, arch=arch), HEURISTIC)]
    if Variant.TMA in variants and rule != Variant.TMA:
        chosen.append(Candidate(Variant.TMA, spec(pass_name, Variant.TMA).heuristic(problem, arch=arch), TMA_HEURISTIC))
    taken = {(c.variant, c.config) for c in chosen}
    pool = [(variant, config) for variant in variants if variant not in cost_model.UNMODELLED
            for config in candidates(problem, pass_name, variant, arch)]  # fmt: skip
    seconds = {item: cost_model.estimate(problem, pass_name, item[1], device).seconds for item in pool}
    ranked = sorted(pool, key=seconds.__getitem__)  # stable: ties keep the routes' and spaces' order
    picks = 0
    for position, item in enumerate(ranked, start=1):
        if picks == top_k:
            break
        if item not in taken:
            chosen.append(Candidate(*item, f"model #{position}", position))
            taken.add(item)
            picks += 1
    for variant in variants:
        if variant not in cost_model.UNMODELLED:
            continue
        space = [config for config in candidates(problem, pass_name, variant, arch)
                 if (variant, config) not in taken]  # fmt: skip
        chosen += [Candidate(variant, config, SPREAD) for config in spread(space, top_k)]
    return chosen


def spread(configs: list[KernelConfig], limit: int) -> list[KernelConfig]:
    """At most `limit` of `configs`, spread evenly over their order (all of them when they fit)."""
    if len(configs) <= limit:
        return configs
    step = len(configs) / limit
    return [configs[int(i * step)] for i in range(limit)]
