"""Launch the general implicit-GEMM forward kernel on one batch chunk."""

from __future__ import annotations

import torch
import triton

from ..arithmetic import ConvProblem
from ..config import KernelConfig
from ..kernels import _conv2d_fwd_implicit_gemm_kernel
from .common import LaunchFlags, bias_arguments, geometry_kwargs
from .epilogue import NO_EPILOGUE, Epilogue

KERNEL = _conv2d_fwd_implicit_gemm_kernel


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
    m = x.shape[0] * problem.p * problem.q
    tiles = triton.cdiv(m, config.block_m) * triton.cdiv(problem.k_per_group, config.block_n)
    bias_ptr, bias_stride = bias_arguments(bias, weight)
    KERNEL[(problem.groups * tiles,)](
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
        problem.k_per_group,
        *x.stride(),
        *weight.stride(),
        bias_stride,
        *y.stride(),
        *epilogue.residual_strides(),
        C_PER_GROUP=problem.c_per_group,
        **geometry_kwargs(problem),
        GROUPS=problem.groups,
        HAS_BIAS=bias is not None,
        **epilogue.kwargs(),
        CHANNELS_INNER=flags.channels_inner,
        INDEX_64=flags.index_64,
        **flags.numeric_kwargs(),
        **config.gemm_kwargs(),
    )
