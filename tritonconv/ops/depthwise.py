"""Prepare the depthwise forward kernel's launch for one batch chunk."""

from __future__ import annotations

import functools

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import ConvProblem, cdiv, next_power_of_2
from .common import ForwardChunk, elementwise_numerics, epilogue_flags, forward_strides, geometry
from .launch import KernelLaunch


@functools.cache
def has_gather() -> bool:
    """Whether this Triton has `tl.gather` (>= 3.3), which `halo_in_registers` needs."""
    import triton.language as tl

    return hasattr(tl, "gather")


def halo_width(problem: ConvProblem, block_m: int) -> int:
    """Input columns one program's output segment touches, rounded up to a power of two."""
    return next_power_of_2((block_m - 1) * problem.stride[1] + (problem.s - 1) * problem.dilation[1] + 1)


def prepare(chunk: ForwardChunk, flip_taps: bool = False) -> KernelLaunch:
    """One program per (output row, column block, channel block); no batch limit beyond the grid's.
    `flip_taps` reads the weight spatially flipped (the input gradient's route), with no copy."""
    x, weight, bias, y, problem, config, flags, epilogue = chunk
    if config.halo_in_registers and not has_gather():
        raise RuntimeError("halo_in_registers needs tl.gather (Triton >= 3.3); use halo_in_registers=False")
    return KernelLaunch(
        kernels._conv2d_fwd_depthwise_kernel,
        (x.shape[0] * problem.p, cdiv(problem.q, config.block_m), cdiv(problem.k, config.block_n)),
        (x.shape[0], problem.h, problem.w, problem.p, problem.q, problem.k,
         *forward_strides(x, (weight.stride(0), weight.stride(2), weight.stride(3)), bias, y, epilogue)),
        {
            "MULTIPLIER": problem.k_per_group,
            "GEOMETRY": geometry(problem),
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "FLIP_TAPS": flip_taps,
            "HALO_IN_REGISTERS": config.halo_in_registers,
            "HALO_W": halo_width(problem, config.block_m),
            "NUMERICS": elementwise_numerics(flags.index_64, x.dtype),
            "BLOCK_M": config.block_m,
            "BLOCK_N": config.block_n,
            **config.options(),
        },
    )  # fmt: skip
