"""Which kernel serves a problem, with which config, and why: the rule `explain` reports.

The rule (first match wins):
1. `conv1x1`: 1x1 kernel, groups == 1, no padding (any stride; dilation is moot at 1x1). A plain GEMM.
2. `depthwise`: groups > 1 and one input channel per group (any channel multiplier K/groups). A
   direct kernel, no tensor cores: its work per output is only R*S multiply-adds.
3. `grouped_tile`: groups > 1 with at most GROUPED_TILE_MAX_CHANNELS input and output channels per
   group, too few to fill a tensor-core tile alone; one program covers several groups.
4. `implicit_gemm`: everything else.

The backward passes have routes of their own (`backward_variants`, the rule's choice first):
- dgrad `conv1x1`: a stride-1 1x1 convolution's input gradient is a 1x1 convolution of dY with the
  transposed weight, run by the conv1x1 GEMM kernel.
- dgrad `depthwise`: a stride-1, multiplier-1 depthwise convolution's input gradient is a depthwise
  convolution of dY with the flipped weight, run by the depthwise forward kernel.
- wgrad `depthwise`: depthwise weight gradients take a direct kernel without tl.dot.
- `implicit_gemm`: the general kernels (dgrad by masking or by stride phase, split-K wgrad).
The autotuner times every route a problem has; with nothing tuned the first one runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .arithmetic import (
    CONTIGUOUS,
    ConvProblem,
    dgrad_as_conv1x1,
    dgrad_as_depthwise,
    dilated_reach,
    problem_from_tensors,
)
from .config import KernelConfig, depthwise_wgrad_config, dgrad_config, heuristic_config, wgrad_config
from .runtime import fp32_dot_precision

VARIANTS = ("implicit_gemm", "conv1x1", "grouped_tile", "depthwise")
GROUPED_TILE_MAX_CHANNELS = 32


@dataclass(frozen=True)
class Plan:
    """What will run for a problem: the variant, its launch config, and where the config came from."""

    variant: str
    config: KernelConfig
    config_source: str


def is_depthwise(problem: ConvProblem) -> bool:
    """Groups of one input channel each (any channel multiplier K/groups)."""
    return problem.groups > 1 and problem.c_per_group == 1


def choose_variant(problem: ConvProblem) -> str:
    """Apply the rule in this module's docstring."""
    no_padding = problem.padding == (0, 0) and problem.padding_end == (0, 0)
    if problem.groups == 1 and problem.r == problem.s == 1 and no_padding:
        return "conv1x1"
    if is_depthwise(problem):
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


PASSES = ("fwd", "dgrad", "wgrad")


def dgrad_is_conv1x1(problem: ConvProblem) -> bool:
    return choose_variant(problem) == "conv1x1" and problem.stride == (1, 1)


def dgrad_is_depthwise_conv(problem: ConvProblem) -> bool:
    """Stride 1, one output channel per input channel, and padding no wider than the dilated kernel
    on any side (so the transposed padding dil*(k-1) - pad is not negative)."""
    if not is_depthwise(problem) or problem.k_per_group != 1 or problem.stride != (1, 1):
        return False
    reach = dilated_reach(problem)
    pads = (*problem.padding, *problem.padding_end)
    return all(pad <= reach[index % 2] for index, pad in enumerate(pads))


@functools.lru_cache(maxsize=4096)
def backward_variants(problem: ConvProblem, pass_name: str) -> tuple[str, ...]:
    """The routes that compute a backward pass of `problem`, the rule's choice first (see the module
    docstring); the general `implicit_gemm` kernels serve every problem."""
    if pass_name == "dgrad":
        if dgrad_is_conv1x1(problem):
            return ("conv1x1", "implicit_gemm")
        if dgrad_is_depthwise_conv(problem):
            return ("depthwise", "implicit_gemm")
        return ("implicit_gemm",)
    if pass_name == "wgrad":
        return ("depthwise", "implicit_gemm") if is_depthwise(problem) else ("implicit_gemm",)
    raise ValueError(f"unknown backward pass {pass_name!r}; expected 'dgrad' or 'wgrad'")


def heuristic_backward_config(problem: ConvProblem, pass_name: str, variant: str) -> KernelConfig:
    """The untimed config of a backward route: the routes through a forward kernel size it to the
    forward problem they run."""
    if pass_name == "dgrad" and variant == "conv1x1":
        return heuristic_config(dgrad_as_conv1x1(problem, CONTIGUOUS), "conv1x1")
    if pass_name == "dgrad" and variant == "depthwise":
        return heuristic_config(dgrad_as_depthwise(problem, CONTIGUOUS), "depthwise")
    if pass_name == "dgrad":
        return dgrad_config(problem)
    return depthwise_wgrad_config(problem) if variant == "depthwise" else wgrad_config(problem)


AUTOTUNE_ENV = "TRITONCONV_AUTOTUNE"
AUTOTUNE_MODES = ("off", "cached", "on")
_tuned_plans: dict[tuple[ConvProblem, str, str, str], Plan] = {}


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
    return plan_pass(problem, "fwd")


def plan_pass(problem: ConvProblem, pass_name: str) -> Plan:
    """The plan of any pass ('fwd', 'dgrad', 'wgrad'), looked up as `plan_forward` describes."""
    mode = autotune_mode()
    if mode == "off":
        return heuristic_plan(problem, pass_name)
    memo_key = (problem, pass_name, mode, fp32_dot_precision())
    plan = _tuned_plans.get(memo_key)
    if plan is None:
        plan, final = _plan_from_tuning(problem, pass_name, mode)
        if final:
            _tuned_plans[memo_key] = plan
    return plan


@functools.lru_cache(maxsize=4096)
def heuristic_plan(problem: ConvProblem, pass_name: str = "fwd") -> Plan:
    if pass_name == "fwd":
        variant = choose_variant(problem)
        return Plan(variant=variant, config=heuristic_config(problem, variant), config_source="heuristic")
    variant = backward_variants(problem, pass_name)[0]
    return Plan(variant, heuristic_backward_config(problem, pass_name, variant), "heuristic")


def forget_plans() -> None:
    _tuned_plans.clear()


def _plan_from_tuning(problem: ConvProblem, pass_name: str, mode: str) -> tuple[Plan, bool]:
    """(plan, whether it may be memoised): a heuristic plan served only because tuning was not
    allowed right now (CUDA-graph capture, torch.compile tracing) is not remembered."""
    from .tuning.session import device_cache, find_entry, tune_problems

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
    if entry.get("variant") not in _variants(problem, pass_name):  # edited by hand, or another rule's
        return heuristic_plan(problem, pass_name), final
    return Plan(entry["variant"], config, source), final


def _variants(problem: ConvProblem, pass_name: str) -> tuple[str, ...]:
    return applicable_variants(problem) if pass_name == "fwd" else backward_variants(problem, pass_name)


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

    Returns the forward's `variant`, `config` (block sizes, warps, stages) and `config_source`,
    the same three for each gradient under `backward` ('dgrad', 'wgrad'), the normalized `problem`
    and its `gemm` view, FLOPs and minimum bytes.
    """
    problem = problem_from_tensors(input, weight, bias, stride, padding, dilation, groups)
    plan = plan_forward(problem)
    backward = {pass_name: plan_pass(problem, pass_name) for pass_name in ("dgrad", "wgrad")}
    return {
        "variant": plan.variant,
        "config": plan.config.as_dict(),
        "config_source": plan.config_source,
        "backward": {
            name: {"variant": p.variant, "config": p.config.as_dict(), "config_source": p.config_source}
            for name, p in backward.items()
        },
        "problem": problem,
        "gemm": {"m": problem.gemm_m, "n": problem.gemm_n, "k": problem.gemm_k, "groups": problem.groups},
        "flops": problem.flops,
        "min_bytes": problem.min_bytes,
    }
