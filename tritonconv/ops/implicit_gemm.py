"""Launch the general implicit-GEMM forward kernel on one batch chunk."""

from __future__ import annotations

import torch
import triton

from ..arithmetic import ConvProblem
from ..config import KernelConfig
from ..kernels import _conv2d_fwd_implicit_gemm_kernel
from .common import LaunchFlags

KERNEL = _conv2d_fwd_implicit_gemm_kernel


def launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    flags: LaunchFlags,
) -> None:
    m = x.shape[0] * problem.p * problem.q
    tiles = triton.cdiv(m, config.block_m) * triton.cdiv(problem.k_per_group, config.block_n)
    KERNEL[(problem.groups * tiles,)](
        x,
        weight,
        bias if bias is not None else weight,
        y,
        x.shape[0],
        problem.h,
        problem.w,
        problem.p,
        problem.q,
        problem.k_per_group,
        *x.stride(),
        *weight.stride(),
        bias.stride(0) if bias is not None else 0,
        *y.stride(),
        C_PER_GROUP=problem.c_per_group,
        R=problem.r,
        S=problem.s,
        STRIDE_H=problem.stride[0],
        STRIDE_W=problem.stride[1],
        PAD_H=problem.padding[0],
        PAD_W=problem.padding[1],
        DIL_H=problem.dilation[0],
        DIL_W=problem.dilation[1],
        GROUPS=problem.groups,
        HAS_BIAS=bias is not None,
        CHANNELS_INNER=flags.channels_inner,
        INDEX_64=flags.index_64,
        ACC_FP64=flags.acc_fp64,
        UPCAST_OPERANDS=flags.upcast_operands,
        DOT_PRECISION=flags.dot_precision,
        **config.gemm_kwargs(),
    )
