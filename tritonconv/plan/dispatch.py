"""Which kernel serves a pass of a problem, with which config, and why: the plan `explain` reports.

The variant rule and every route live in `registry.SPECS` (read top to bottom per pass). A plan's
config comes from the first of: this device's tuning cache, the table shipped for it, tuning now
(TRITONCONV_AUTOTUNE=on), the nearest tuned shape of the same class, the route's heuristic.

Plans are memoised per process, keyed by the problem, the pass, the autotune mode, TF32 and the
tuning cache's generation (`tuning.cache.generation`): storing a tuned entry, in this process,
bumps the generation, so no stale plan survives a tuning run and nothing calls back into this module.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import torch

from ..problem.arithmetic import ConvProblem, problem_from_tensors
from ..problem.config import KernelConfig
from ..problem.devices import GpuArch
from ..problem.planar import volume_problem
from ..problem.runtime import fp32_dot_precision, planning_arch
from ..problem.torch_reference import TORCH_CONV3D, check_like_torch
from ..routes.registry import (
    GROUPED_TILE_MAX_CHANNELS,
    Pass,
    Plan,
    Variant,
    is_depthwise,
    routes,
    rule_variant,
    served_routes,
    spec,
)
from ..tuning import cache as tuning_cache
from ..tuning.session import device_cache, find_entry, tune_problems
from ..tuning.tuner import best_triton

__all__ = [
    "GROUPED_TILE_MAX_CHANNELS",
    "PASSES",
    "Plan",
    "applicable_variants",
    "autotune_mode",
    "backward_variants",
    "choose_variant",
    "explain",
    "forget_plans",
    "heuristic_backward_config",
    "heuristic_plan",
    "is_depthwise",
    "plan_forward",
    "plan_pass",
]

PASSES = tuple(Pass)
AUTOTUNE_ENV = "TRITONCONV_AUTOTUNE"
AUTOTUNE_MODES = ("off", "cached", "on")
_plans: dict[tuple, Plan] = {}


def choose_variant(problem: ConvProblem) -> Variant:
    """The forward variant the untimed rule picks (`registry.SPECS`)."""
    return rule_variant(problem, Pass.FWD)


def applicable_variants(problem: ConvProblem) -> tuple[Variant, ...]:
    """Every forward variant whose kernel computes `problem`, the rule's choice first."""
    return routes(problem, Pass.FWD)


def backward_variants(problem: ConvProblem, pass_name: str) -> tuple[Variant, ...]:
    """The routes that compute a backward pass of `problem`, the rule's choice first."""
    if pass_name not in (Pass.DGRAD, Pass.WGRAD):
        raise ValueError(f"unknown backward pass {pass_name!r}; expected 'dgrad' or 'wgrad'")
    return routes(problem, pass_name)


def heuristic_backward_config(problem: ConvProblem, pass_name: str, variant: str) -> KernelConfig:
    """The untimed config of a backward route."""
    return spec(pass_name, variant).heuristic(problem)


def autotune_mode() -> str:
    """TRITONCONV_AUTOTUNE: 'off' (heuristic only), 'cached' (the default: the tuning cache, else
    the heuristic; never times anything in a call) or 'on' (tune a new problem on first use)."""
    mode = os.environ.get(AUTOTUNE_ENV, "cached")
    if mode not in AUTOTUNE_MODES:
        raise ValueError(f"{AUTOTUNE_ENV} must be one of {', '.join(AUTOTUNE_MODES)}; got {mode!r}")
    return mode


def plan_forward(problem: ConvProblem) -> Plan:
    """The forward's plan (see `plan_pass`)."""
    return plan_pass(problem, Pass.FWD)


def plan_pass(problem: ConvProblem, pass_name: str) -> Plan:
    """The plan of a pass ('fwd', 'dgrad', 'wgrad') and where its config came from: `tuned cache`
    (this device's tuning cache), `shipped table` (autotune/<device>.json), `tuned now` (mode
    'on', first use), `nearest tuned shape: <key>` or `heuristic`."""
    return plan_and_finality(problem, pass_name)[0]


def plan_and_finality(problem: ConvProblem, pass_name: str) -> tuple[Plan, bool]:
    """(plan, whether it may be remembered): a heuristic plan served only because tuning was not
    allowed right now (CUDA-graph capture, torch.compile tracing) in mode 'on' is not final."""
    mode = autotune_mode()
    if mode == "off":
        return heuristic_plan(problem, pass_name), True
    memo_key = (problem, pass_name, mode, fp32_dot_precision(), tuning_cache.generation(), planning_arch())
    plan = _plans.get(memo_key)
    if plan is not None:
        return plan, True
    plan, final = _plan_from_tuning(problem, pass_name, mode)
    if final:
        if len(_plans) > 16384:
            _plans.clear()
        _plans[memo_key] = plan
    return plan, final


def heuristic_plan(problem: ConvProblem, pass_name: str = Pass.FWD) -> Plan:
    """The untimed rule's route at its heuristic config, for the arch being planned for."""
    return _heuristic_plan(problem, pass_name, planning_arch())


@functools.lru_cache(maxsize=4096)
def _heuristic_plan(problem: ConvProblem, pass_name: str, arch: GpuArch) -> Plan:
    variant = rule_variant(problem, pass_name)
    return Plan(variant, spec(pass_name, variant).heuristic(problem, arch=arch), "heuristic")


def forget_plans() -> None:
    """Forget every memoised plan and prepared call (after changing the cache directory, say)."""
    tuning_cache.bump_generation()


def _plan_from_tuning(problem: ConvProblem, pass_name: str, mode: str) -> tuple[Plan, bool]:
    found = find_entry(problem, pass_name, borrow=False)
    final = True
    if found is None and mode == "on":
        if _tuning_forbidden_now():
            final = False
        else:
            tune_problems([problem], [pass_name], cache=device_cache())
            found = find_entry(problem, pass_name, borrow=False)
            if found is not None:
                found = (found[0], "tuned now")
    if found is None:
        found = find_entry(problem, pass_name)
    if found is None:
        return heuristic_plan(problem, pass_name), final
    entry, source = found
    try:
        config = KernelConfig(**entry["config"])
    except TypeError:  # an entry edited by hand or written by another layout of KernelConfig
        return heuristic_plan(problem, pass_name), final
    if entry.get("variant") not in served_routes(problem, pass_name):  # edited by hand, or another rule's
        return heuristic_plan(problem, pass_name), final
    return Plan(Variant(entry["variant"]), config, source), final


def _tuning_forbidden_now() -> bool:
    """Timing launches kernels and synchronises: never while a CUDA graph is being captured or
    torch.compile is tracing."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def explain(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> dict:
    """Say what `tritonconv.conv2d` (or, for a 5-D weight, `conv3d`) would run for these arguments,
    without running it. A 3-D call that runs as a 2-D convolution on views has `planar` ('slices' or
    'columns') and that 2-D problem.

    Returns the forward's `variant`, `config` (block sizes, warps, stages) and `config_source`,
    the same three for each gradient under `backward` ('dgrad', 'wgrad'), each pass's `routes`
    (every variant that computes it, the rule's first), the normalized `problem` and its `gemm`
    view, FLOPs and minimum bytes.
    """
    if weight.dim() == 5:  # a 3-D convolution: torch's own checks first, then the problem that runs it
        check_like_torch(TORCH_CONV3D, input, weight, bias, (stride, padding, dilation, groups), batched_dim=5)
        problem, planar = volume_problem(input, weight, bias, stride, padding, dilation, groups)
        return describe(problem) if planar is None else {**describe(problem), "planar": planar.kind}
    return describe(problem_from_tensors(input, weight, bias, stride, padding, dilation, groups))


def describe(problem: ConvProblem, passes: Mapping[Pass, Pass] | None = None) -> dict:
    """`explain`'s answer for a problem. `passes` maps each pass of the caller's convolution to the
    problem's pass that runs it (a transposed convolution's forward is its underlying problem's
    dgrad: `registry.TRANSPOSED_PASSES`); by default each pass is itself."""
    served = dict(passes or {name: name for name in Pass})
    plans = {name: plan_pass(problem, served[name]) for name in Pass}
    timings = {name: tuned_timing(problem, served[name]) for name in Pass}
    forward = plans[Pass.FWD]
    return {
        "variant": str(forward.variant),  # the route's name (a str), not the enum's repr
        "config": forward.config.as_dict(),
        "config_source": forward.config_source,
        "timing": timings[Pass.FWD],
        "backward": {
            str(name): {
                "variant": str(p.variant),
                "config": p.config.as_dict(),
                "config_source": p.config_source,
                "timing": timings[name],
            }
            for name, p in plans.items()
            if name != Pass.FWD
        },
        "routes": {str(name): [str(variant) for variant in served_routes(problem, served[name])] for name in Pass},
        "problem": problem,
        "gemm": {"m": problem.gemm_m, "n": problem.gemm_n, "k": problem.gemm_k, "groups": problem.groups},
        "flops": problem.flops,
        "min_bytes": problem.min_bytes,
    }


def tuned_timing(problem: ConvProblem, pass_name: str) -> dict | None:
    """What tuning measured for a pass of `problem` (None if it was not tuned, in this device's cache
    or the shipped table): the route chosen, the best Triton route and its time, torch's time (ms;
    None where that entry never timed torch) and `torch_over_chosen`, torch's time over the chosen
    route's (above 1: tritonconv's kernel is that much faster; 1: torch's own kernel serves it)."""
    found = find_entry(problem, pass_name, borrow=False)
    if found is None:
        return None
    entry, source = found
    triton = best_triton(entry) or {}
    torch_ms, chosen_ms = entry.get("torch_ms"), entry.get("median_ms")
    return {
        "chosen": str(entry["variant"]),
        "source": source,
        "triton_route": None if triton.get("variant") is None else str(triton["variant"]),
        "triton_ms": triton.get("median_ms"),
        "torch_ms": torch_ms,
        "torch_over_chosen": None if torch_ms is None or not chosen_ms else torch_ms / chosen_ms,
    }
