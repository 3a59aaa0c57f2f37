"""Prepare the general implicit-GEMM forward kernel's launch for one batch chunk."""

from __future__ import annotations

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import cdiv
from .common import ForwardChunk, epilogue_flags, forward_strides, geometry
from .launch import KernelLaunch


def prepare(chunk: ForwardChunk) -> KernelLaunch:
    x, weight, bias, y, problem, config, flags, epilogue = chunk
    m = x.shape[0] * problem.p * problem.q
    tiles = cdiv(m, config.block_m) * cdiv(problem.k_per_group, config.block_n)
    return KernelLaunch(
        kernels._conv2d_fwd_implicit_gemm_kernel,
        (problem.groups * tiles,),
        (x.shape[0], problem.h, problem.w, problem.p, problem.q, problem.k_per_group,
         *forward_strides(x, weight.stride(), bias, y, epilogue)),
        {
            "C_PER_GROUP": problem.c_per_group,
            "GEOMETRY": geometry(problem),
            "GROUPS": problem.groups,
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "CHANNELS_INNER": flags.channels_inner,
            "NUMERICS": flags.numerics,
            **config.gemm_kwargs(),
        },
    )  # fmt: skip
