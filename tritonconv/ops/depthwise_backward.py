"""Depthwise backward: the input gradient as a depthwise convolution, the weight gradient without tl.dot.

Through the general kernels a depthwise layer is C groups of one channel each, and every tile is
1/16 full. Here:
- dgrad at stride 1 with one output channel per input channel is itself a depthwise convolution: of
  dY with the spatially flipped weight, with padding dil*(k-1) - pad on each side. It runs through
  the depthwise forward kernel (the flipped weight is a C*R*S copy; the activations are not copied).
- wgrad multiplies dY by the tap-shifted input elementwise and sums over pixels, BLOCK_N channels of
  one tap per program, split over pixels and summed in order like every weight gradient.
"""

from __future__ import annotations

import torch
import triton

from ..arithmetic import ConvProblem, dgrad_as_depthwise
from ..config import KernelConfig
from ..dispatch import Plan
from ..kernels import _conv2d_wgrad_depthwise_kernel
from ..runtime import on_device_of
from .common import geometry_kwargs, needs_int64
from .forward import conv2d_fwd
from .split_reduction import new_workspace, split_reduction, sum_splits


def depthwise_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, problem: ConvProblem, layout: str, plan: Plan
) -> torch.Tensor:
    """dX as the depthwise conv of grad_output with the flipped weight (see the module docstring),
    launched with `plan`'s depthwise forward config."""
    return conv2d_fwd(grad_output, weight.flip(2, 3), None, dgrad_as_depthwise(problem, layout), plan)


def depthwise_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, problem: ConvProblem, grad_weight: torch.Tensor,
    config: KernelConfig,
) -> None:  # fmt: skip
    reduction = problem.n * problem.p * problem.q
    split, chunk = split_reduction(reduction, grad_weight.numel(), config.split_k, config.block_m)
    partial = new_workspace(split, grad_weight.numel(), input)
    grid = (triton.cdiv(problem.k, config.block_n), problem.r * problem.s, split)
    with on_device_of(input):
        _conv2d_wgrad_depthwise_kernel[grid](
            input,
            grad_output,
            partial,
            problem.n,
            problem.h,
            problem.w,
            problem.p,
            problem.q,
            problem.k,
            chunk,
            *input.stride(),
            *grad_output.stride(),
            partial.stride(0),
            MULTIPLIER=problem.k_per_group,
            **geometry_kwargs(problem),
            INDEX_64=needs_int64(input, grad_output) or reduction > 2**31 - 1 - config.block_m,
            ACC_FP64=input.dtype == torch.float64,
            BLOCK_M=config.block_m,
            BLOCK_N=config.block_n,
            num_warps=config.num_warps,
        )
        sum_splits(partial, grad_weight, problem)
