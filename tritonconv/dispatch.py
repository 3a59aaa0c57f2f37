"""Which kernel serves a problem, with which config, and why: the rule `explain` reports.

The rule (first match wins):
1. `conv1x1`: 1x1 kernel, groups == 1, no padding (any stride; dilation is moot at 1x1). A plain GEMM.
2. `depthwise`: groups > 1 and one input channel per group (any channel multiplier K/groups). A
   direct kernel, no tensor cores: its work per output is only R*S multiply-adds.
3. `grouped_tile`: groups > 1 with at most GROUPED_TILE_MAX_CHANNELS input and output channels per
   group, too few to fill a tensor-core tile alone; one program covers several groups.
4. `implicit_gemm`: everything else.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .arithmetic import ConvProblem, problem_from_tensors
from .config import KernelConfig, heuristic_config
from .runtime import fp32_dot_precision

VARIANTS = ("implicit_gemm", "conv1x1", "grouped_tile", "depthwise")
GROUPED_TILE_MAX_CHANNELS = 32


@dataclass(frozen=True)
class Plan:
    """What will run for a problem: the variant, its launch config, and where the config came from."""

    variant: str
    config: KernelConfig
    config_source: str


def choose_variant(problem: ConvProblem) -> str:
    """Apply the rule in this module's docstring."""
    no_padding = problem.padding == (0, 0) and problem.padding_end == (0, 0)
    if problem.groups == 1 and problem.r == problem.s == 1 and no_padding:
        return "conv1x1"
    if problem.groups > 1 and problem.c_per_group == 1:
        return "depthwise"
    if (
        problem.groups > 1
        and problem.c_per_group <= GROUPED_TILE_MAX_CHANNELS
        and problem.k_per_group <= GROUPED_TILE_MAX_CHANNELS
    ):
        return "grouped_tile"
    return "implicit_gemm"


def applicable_variants(problem: ConvProblem) -> tuple[str, ...]:
    """Every variant whose kernel computes `problem` correctly (the rule picks one; tests and the
    autotuner may try all). implicit_gemm and grouped_tile serve any problem; conv1x1 and depthwise
    only their own class."""
    no_padding = problem.padding == (0, 0) and problem.padding_end == (0, 0)
    variants = ["implicit_gemm", "grouped_tile"]
    if problem.groups == 1 and problem.r == problem.s == 1 and no_padding:
        variants.append("conv1x1")
    if problem.c_per_group == 1:
        variants.append("depthwise")
    return tuple(variants)


AUTOTUNE_ENV = "TRITONCONV_AUTOTUNE"
AUTOTUNE_MODES = ("off", "cached", "on")
_tuned_plans: dict[tuple[ConvProblem, str, bool], Plan] = {}


def autotune_mode() -> str:
    """TRITONCONV_AUTOTUNE: 'off' (heuristic only), 'cached' (the default: the tuning cache, else
    the heuristic; never times anything in a call) or 'on' (tune a new problem on first use)."""
    mode = os.environ.get(AUTOTUNE_ENV, "cached")
    if mode not in AUTOTUNE_MODES:
        raise ValueError(f"{AUTOTUNE_ENV} must be one of {', '.join(AUTOTUNE_MODES)}; got {mode!r}")
    return mode


def plan_forward(problem: ConvProblem) -> Plan:
    """The plan the forward pass launches with, and where its config came from: `tuned cache` (this
    device's tuning cache), `shipped table` (autotune/<device>.json), `tuned now` (mode 'on', first
    use), `nearest tuned shape: <key>` (borrowed from a similar tuned shape) or `heuristic`.

    Memoised per process: a plan is asked for on every call. Tuning in this process forgets the
    memo (`forget_plans`); another process's tuning is seen by the next process.
    """
    mode = autotune_mode()
    if mode == "off":
        return heuristic_plan(problem)
    memo_key = (problem, mode, fp32_dot_precision())
    plan = _tuned_plans.get(memo_key)
    if plan is None:
        plan, final = _plan_from_tuning(problem, mode)
        if final:
            _tuned_plans[memo_key] = plan
    return plan


@functools.lru_cache(maxsize=4096)
def heuristic_plan(problem: ConvProblem) -> Plan:
    variant = choose_variant(problem)
    return Plan(variant=variant, config=heuristic_config(problem, variant), config_source="heuristic")


def forget_plans() -> None:
    _tuned_plans.clear()


def _plan_from_tuning(problem: ConvProblem, mode: str) -> tuple[Plan, bool]:
    """(plan, whether it may be memoised): a heuristic plan served only because tuning was not
    allowed right now (CUDA-graph capture, torch.compile tracing) is not remembered."""
    from .tuning.session import device_cache, find_entry, tune_problems

    found = find_entry(problem, "fwd", borrow=False)
    final = True
    if found is None and mode == "on":
        if _tuning_forbidden_now():
            final = False
        else:
            tune_problems([problem], ["fwd"], cache=device_cache())
            found = find_entry(problem, "fwd", borrow=False)
            if found is not None:
                found = (found[0], "tuned now")
    if found is None:
        found = find_entry(problem, "fwd")
    if found is None:
        return heuristic_plan(problem), final
    entry, source = found
    try:
        config = KernelConfig(**entry["config"])
    except TypeError:  # an entry edited by hand or written by another layout of KernelConfig
        return heuristic_plan(problem), final
    return Plan(entry["variant"], config, source), final


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
    """Say what `tritonconv.conv2d` would run for these arguments, without running it.

    Returns `variant`, `config` (block sizes, warps, stages), `config_source`, the normalized
    `problem` and its `gemm` view, FLOPs and minimum bytes.
    """
    problem = problem_from_tensors(input, weight, bias, stride, padding, dilation, groups)
    plan = plan_forward(problem)
    return {
        "variant": plan.variant,
        "config": plan.config.as_dict(),
        "config_source": plan.config_source,
        "problem": problem,
        "gemm": {"m": problem.gemm_m, "n": problem.gemm_n, "k": problem.gemm_k, "groups": problem.groups},
        "flops": problem.flops,
        "min_bytes": problem.min_bytes,
    }
