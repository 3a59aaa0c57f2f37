"""Prepare the grouped-tile forward kernel's launch (several small groups per program) for one batch chunk."""

from __future__ import annotations

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import cdiv
from .common import ForwardChunk, epilogue_flags, forward_strides, geometry
from .launch import KernelLaunch


def prepare(chunk: ForwardChunk) -> KernelLaunch:
    x, weight, bias, y, problem, config, flags, epilogue = chunk
    m = x.shape[0] * problem.p * problem.q
    programs = (
        cdiv(problem.groups, config.block_g) * cdiv(m, config.block_m) * cdiv(problem.k_per_group, config.block_n)
    )
    return KernelLaunch(
        kernels._conv2d_fwd_grouped_tile_kernel,
        (programs,),
        (
            x.shape[0],
            problem.h,
            problem.w,
            problem.p,
            problem.q,
            *forward_strides(x, weight.stride(), bias, y, epilogue),
        ),
        {
            "C_PER_GROUP": problem.c_per_group,
            "K_PER_GROUP": problem.k_per_group,
            "GEOMETRY": geometry(problem),
            "GROUPS": problem.groups,
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "CHANNELS_INNER": flags.channels_inner,
            "NUMERICS": flags.numerics,
            "BLOCK_G": config.block_g,
            "BLOCK_M": config.block_m,
            "BLOCK_N": config.block_n,
            "BLOCK_K": config.block_k,
            **config.options(),
        },
    )
