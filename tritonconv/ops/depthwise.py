"""Launch the depthwise forward kernel on one batch chunk."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..arithmetic import ConvProblem
from ..config import KernelConfig
from ..kernels import _conv2d_fwd_depthwise_kernel
from .common import LaunchFlags, bias_arguments, geometry_kwargs
from .epilogue import NO_EPILOGUE, Epilogue

KERNEL = _conv2d_fwd_depthwise_kernel
HAS_GATHER = hasattr(tl, "gather")


def halo_width(problem: ConvProblem, block_m: int) -> int:
    """Input columns one program's output segment touches, rounded up to a power of two."""
    return triton.next_power_of_2((block_m - 1) * problem.stride[1] + (problem.s - 1) * problem.dilation[1] + 1)


def launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    flags: LaunchFlags,
    epilogue: Epilogue = NO_EPILOGUE,
) -> None:
    """One program per (output row, column block, channel block); no batch limit beyond the grid's."""
    if config.halo_in_registers and not HAS_GATHER:
        raise RuntimeError("halo_in_registers needs tl.gather (Triton >= 3.3); use halo_in_registers=False")
    grid = (x.shape[0] * problem.p, triton.cdiv(problem.q, config.block_m), triton.cdiv(problem.k, config.block_n))
    bias_ptr, bias_stride = bias_arguments(bias, weight)
    KERNEL[grid](
        x,
        weight,
        bias_ptr,
        y,
        *epilogue.pointers(y),
        x.shape[0],
        problem.h,
        problem.w,
        problem.p,
        problem.q,
        problem.k,
        *x.stride(),
        weight.stride(0),
        weight.stride(2),
        weight.stride(3),
        bias_stride,
        *y.stride(),
        *epilogue.residual_strides(),
        MULTIPLIER=problem.k_per_group,
        **geometry_kwargs(problem),
        HAS_BIAS=bias is not None,
        **epilogue.kwargs(),
        HALO_IN_REGISTERS=config.halo_in_registers,
        HALO_W=halo_width(problem, config.block_m),
        INDEX_64=flags.index_64,
        ACC_FP64=flags.acc_fp64,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
