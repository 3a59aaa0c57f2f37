"""Input-gradient launches, one `prepare_*` per route; each returns `run(grad_output, weight, grad_input)`.

- masking: the general kernel over all N*H*W input pixels, taps that no output reaches masked;
- stride phase: input pixels with h = ph (mod stride) all take the same taps, so each program
  takes one phase (grid axis 1), skips the taps that cannot reach it and walks the kept ones;
- conv1x1: a stride-1 1x1 convolution's input gradient is a 1x1 convolution of dY with the
  transposed weight (a strided view, no copy), run by the conv1x1 GEMM kernel;
- depthwise: a stride-1, multiplier-1 depthwise convolution's input gradient is a depthwise
  convolution of dY with the spatially flipped weight (read flipped, no copy), padded
  dil*(k-1) - pad on each side, run by the depthwise forward kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton

from ..kernels import _conv2d_dgrad_kernel, _conv2d_dgrad_phased_kernel
from ..problem.arithmetic import CHANNELS_LAST, CONTIGUOUS, ConvProblem, dgrad_as_conv1x1, dgrad_as_depthwise
from ..problem.arithmetic import is_channels_last_like as channels_last
from ..problem.config import KernelConfig
from . import conv1x1, depthwise
from .common import LaunchFlags, geometry, needs_int64
from .forward import prepare_forward
from .launch import KernelLaunch

DgradRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def prepare_masking(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> DgradRun:  # fmt: skip
    return _prepare_general(_conv2d_dgrad_kernel, 1, problem.h, problem.w, grad_output, weight, grad_input,
                            problem, config)  # fmt: skip


def prepare_phased(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> DgradRun:  # fmt: skip
    (stride_h, stride_w), phases = problem.stride, problem.stride[0] * problem.stride[1]
    rows, columns = triton.cdiv(problem.h, stride_h), triton.cdiv(problem.w, stride_w)
    return _prepare_general(_conv2d_dgrad_phased_kernel, phases, rows, columns, grad_output, weight, grad_input,
                            problem, config)  # fmt: skip


def _prepare_general(
    kernel: object, phases: int, rows: int, columns: int, grad_output: torch.Tensor, weight: torch.Tensor,
    grad_input: torch.Tensor, problem: ConvProblem, config: KernelConfig,
) -> KernelLaunch:  # fmt: skip
    """The masking and phased kernels take the same arguments; only the masking kernel orders its
    reduction by layout (CHANNELS_INNER): the phased one's addresses suit any layout."""
    m = problem.n * rows * columns
    index_64 = needs_int64(grad_output, weight, grad_input) or m > 2**31 - 1 - config.block_m
    flags = LaunchFlags.for_call(grad_output.dtype, kernel, index_64, channels_last(grad_output))
    layout = {"CHANNELS_INNER": flags.channels_inner} if phases == 1 else {}
    tiles = triton.cdiv(m, config.block_m) * triton.cdiv(problem.c_per_group, config.block_n)
    return KernelLaunch(
        kernel,
        (problem.groups * tiles, phases),
        (problem.n, problem.h, problem.w, problem.p, problem.q, problem.c_per_group,
         grad_output.stride(), weight.stride(), grad_input.stride()),
        {
            "K_PER_GROUP": problem.k_per_group,
            "GEOMETRY": geometry(problem),
            "GROUPS": problem.groups,
            **layout,
            "NUMERICS": flags.numerics,
            **config.gemm_kwargs(),
        },
    )  # fmt: skip


def prepare_conv1x1_route(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> DgradRun:  # fmt: skip
    transposed = dgrad_as_conv1x1(problem, _layout(grad_input))
    run = prepare_forward(conv1x1.prepare, grad_output, weight.transpose(0, 1), None, grad_input, transposed, config)
    # The transposed weight is a view of the same memory: later calls pass the weight itself.
    return lambda grad_output, weight, grad_input: run(grad_output, weight, None, grad_input)


def prepare_depthwise_route(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> DgradRun:  # fmt: skip
    flipped = dgrad_as_depthwise(problem, _layout(grad_input))
    run = prepare_forward(depthwise.prepare, grad_output, weight, None, grad_input, flipped, config, flip_taps=True)
    return lambda grad_output, weight, grad_input: run(grad_output, weight, None, grad_input)


def _layout(tensor: torch.Tensor) -> str:
    return CHANNELS_LAST if channels_last(tensor) else CONTIGUOUS
