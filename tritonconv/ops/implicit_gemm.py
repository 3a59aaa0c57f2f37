"""Prepare the general implicit-GEMM forward kernel's launch for one batch chunk."""

from __future__ import annotations

import torch
import triton

from ..kernels import _conv2d_fwd_implicit_gemm_kernel
from ..problem.arithmetic import ConvProblem
from ..problem.config import KernelConfig
from .common import LaunchFlags, forward_constexprs, forward_strides, geometry_kwargs
from .epilogue import Epilogue
from .launch import KernelLaunch

KERNEL = _conv2d_fwd_implicit_gemm_kernel


def prepare(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    flags: LaunchFlags,
    epilogue: Epilogue,
) -> KernelLaunch:
    m = x.shape[0] * problem.p * problem.q
    tiles = triton.cdiv(m, config.block_m) * triton.cdiv(problem.k_per_group, config.block_n)
    return KernelLaunch(
        KERNEL,
        (problem.groups * tiles,),
        (x.shape[0], problem.h, problem.w, problem.p, problem.q, problem.k_per_group,
         *forward_strides(x, weight.stride(), bias, y, epilogue)),
        {
            "C_PER_GROUP": problem.c_per_group,
            **geometry_kwargs(problem),
            "GROUPS": problem.groups,
            **forward_constexprs(bias, epilogue),
            "CHANNELS_INNER": flags.channels_inner,
            "INDEX_64": flags.index_64,
            **flags.numeric_kwargs(),
            **config.gemm_kwargs(),
        },
    )  # fmt: skip
