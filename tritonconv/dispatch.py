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
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .arithmetic import ConvProblem, problem_from_tensors
from .config import KernelConfig, heuristic_config

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


@functools.lru_cache(maxsize=4096)
def plan_forward(problem: ConvProblem) -> Plan:
    """The plan the forward pass launches with (the autotuner will refine the config source).

    Memoised: a plan depends on the problem alone, and every call asks for one.
    """
    variant = choose_variant(problem)
    return Plan(variant=variant, config=heuristic_config(problem, variant), config_source="heuristic")


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
