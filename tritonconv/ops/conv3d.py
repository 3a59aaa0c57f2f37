"""Prepare the 3-D kernels' launches (`kernels/conv3d.py`): the forward, the input gradient, and the
weight gradient (split over output voxels and summed in order by `wgrad`'s sum kernel, whose
(c, r, s) walk covers (c, t*r, s) because a 5-D weight's depth and height strides nest).

The flat voxel indices go 64-bit when N*O*P*Q (or N*D*H*W) passes 2^31, as video activations do:
the batch is never split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import CHANNELS_LAST, CONTIGUOUS, ConvProblem, cdiv, dgrad_as_depthwise, is_channels_last_like
from ..problem.config import KernelConfig
from .common import (
    INT32_LIMIT,
    LaunchFlags,
    elementwise_numerics,
    epilogue_flags,
    forward_pointers,
    forward_strides,
    geometry_3d,
    needs_int64,
)
from .dgrad import as_dgrad_run, dgrad_run
from .epilogue import NO_EPILOGUE, Epilogue
from .launch import KernelLaunch
from .wgrad import split_or_direct, split_reduction


def _flags(kernel: object, rows: int, *tensors: torch.Tensor) -> LaunchFlags:
    """64-bit indexing when a tensor spans 2^31 elements or the flat row index may pass it."""
    index_64 = needs_int64(*tensors) or rows > INT32_LIMIT - 256
    return LaunchFlags.for_call(tensors[0].dtype, kernel, index_64, is_channels_last_like(tensors[0]))


def _forward_run(launch: KernelLaunch) -> Callable[..., None]:
    """The forward's `run(x, weight, bias, y, residual, z)` over a launch of its six pointers."""

    def run(x, weight, bias, y, residual=None, preactivation=None) -> None:
        launch(*forward_pointers(x, weight, bias, y, residual, preactivation))

    return run


def prepare_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, epilogue: Epilogue,
) -> Callable[..., None]:  # fmt: skip
    """Y = activation(conv3d(x, weight) + bias + residual), through strides; `run(x, weight, bias,
    y, residual, z)`, z receiving the pre-activation where the epilogue keeps it."""
    flags = _flags(kernels._conv3d_fwd_kernel, problem.gemm_m, x, weight, y, *epilogue.tensors())
    tiles = cdiv(problem.gemm_m, config.block_m) * cdiv(problem.k_per_group, config.block_n)
    launch = KernelLaunch(
        kernels._conv3d_fwd_kernel,
        (problem.groups * tiles,),
        (problem.n, problem.d, problem.h, problem.w, problem.o, problem.p, problem.q, problem.k_per_group,
         *forward_strides(x, weight.stride(), bias, y, epilogue)),
        {
            "C_PER_GROUP": problem.c_per_group,
            "GEOMETRY": geometry_3d(problem),
            "GROUPS": problem.groups,
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "CHANNELS_INNER": flags.channels_inner,
            "NUMERICS": flags.numerics,
            **config.gemm_kwargs(),
        },
    )  # fmt: skip

    return _forward_run(launch)


def prepare_depthwise_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, epilogue: Epilogue, flip_taps: bool = False,
) -> Callable[..., None]:  # fmt: skip
    """The depthwise 3-D forward: one program per (output row, column block, channel block), with
    the fused tail `prepare_forward` has."""
    rows = problem.n * problem.o * problem.p
    if rows > INT32_LIMIT:
        raise RuntimeError(f"{rows} output rows are more than one launch's grid holds")
    flags = _flags(kernels._conv3d_fwd_depthwise_kernel, problem.gemm_m, x, weight, y, *epilogue.tensors())
    launch = KernelLaunch(
        kernels._conv3d_fwd_depthwise_kernel,
        (rows, cdiv(problem.q, config.block_m), cdiv(problem.k, config.block_n)),
        (problem.d, problem.h, problem.w, problem.o, problem.p, problem.q, problem.k,
         *forward_strides(x, (weight.stride(0), *weight.stride()[2:]), bias, y, epilogue)),
        {
            "MULTIPLIER": problem.k_per_group,
            "GEOMETRY": geometry_3d(problem),
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "NUMERICS": elementwise_numerics(flags.index_64, x.dtype),
            "FLIP_TAPS": flip_taps,
            "BLOCK_M": config.block_m,
            "BLOCK_N": config.block_n,
            "num_warps": config.num_warps,
        },
    )  # fmt: skip

    return _forward_run(launch)


def prepare_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> Callable[..., None]:  # fmt: skip
    """dX: M = N*D*H*W input voxels, N = C/g, the reduction over (K/g)*T*R*S with unreached taps
    masked; `run(grad_output, weight, grad_input)`, and for a 3-D transposed convolution's forward
    `run(grad_output, weight, grad_input, bias, residual, preactivation)` with its fused tail."""
    rows = problem.n * problem.d * problem.h * problem.w
    flags = _flags(kernels._conv3d_dgrad_kernel, rows, grad_output, weight, grad_input, *epilogue.tensors())
    tiles = cdiv(rows, config.block_m) * cdiv(problem.c_per_group, config.block_n)
    launch = KernelLaunch(
        kernels._conv3d_dgrad_kernel,
        (problem.groups * tiles,),
        (problem.n, problem.d, problem.h, problem.w, problem.o, problem.p, problem.q, problem.c_per_group,
         *forward_strides(grad_output, weight.stride(), bias, grad_input, epilogue)),
        {
            "K_PER_GROUP": problem.k_per_group,
            "GEOMETRY": geometry_3d(problem),
            "GROUPS": problem.groups,
            "CHANNELS_INNER": flags.channels_inner,
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "NUMERICS": flags.numerics,
            **config.gemm_kwargs(),
        },
    )  # fmt: skip
    return dgrad_run(launch)


def prepare_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> Callable[..., None]:  # fmt: skip
    """dW: M = K/g, N = (C/g)*T*R*S, the N*O*P*Q reduction split `split_k` ways and summed in order;
    `run(input, grad_output, grad_weight)`."""
    split, chunk = split_reduction(problem.gemm_m, grad_weight.numel(), config.split_k, config.block_k)
    tiles = cdiv(problem.k_per_group, config.block_m) * cdiv(problem.gemm_k, config.block_n)
    flags = _flags(kernels._conv3d_wgrad_partial_kernel, problem.gemm_m, input, grad_output)

    def partial_launch(out_strides: tuple[int, ...]) -> KernelLaunch:
        split_stride, k_stride, c_stride, tr_stride, s_stride = out_strides
        t_stride = tr_stride * problem.r  # the sum's (c, t*r, s) walk: depth nests over height
        return KernelLaunch(
            kernels._conv3d_wgrad_partial_kernel,
            (problem.groups * tiles, split),
            (problem.n, problem.d, problem.h, problem.w, problem.o, problem.p, problem.q, problem.k_per_group, chunk,
             input.stride(), grad_output.stride(), (split_stride, k_stride, c_stride, t_stride, tr_stride, s_stride)),
            {
                "C_PER_GROUP": problem.c_per_group,
                "GEOMETRY": geometry_3d(problem),
                "GROUPS": problem.groups,
                "CHANNELS_INNER": flags.channels_inner,
                "NUMERICS": flags.numerics,
                "BLOCK_M": config.block_m,
                "BLOCK_N": config.block_n,
                "BLOCK_K": config.block_k,
                **config.options(),
            },
        )  # fmt: skip

    k, c, t, r, s = grad_weight.shape
    # (K, C/g, T, R, S) as (K, C/g, T*R, S): depth and height strides nest in both layouts (a view),
    # so the sum kernel's (c, r, s) walk covers the depth too.
    folded = dataclasses.replace(problem, r=t * r, depth=None)
    return split_or_direct(partial_launch, split, grad_weight.view(k, c, t * r, s), folded)


def prepare_depthwise_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> Callable[..., None]:  # fmt: skip
    """Depthwise 3-D dW without tl.dot: BLOCK_N channels of one tap per program, the N*O*P*Q voxels
    split `split_k` ways and summed in order; `run(input, grad_output, grad_weight)`."""
    split, chunk = split_reduction(problem.gemm_m, grad_weight.numel(), config.split_k, config.block_m)
    index_64 = needs_int64(input, grad_output) or problem.gemm_m > INT32_LIMIT - config.block_m
    taps = problem.depth.kernel * problem.r * problem.s

    def partial_launch(out_strides: tuple[int, ...]) -> KernelLaunch:
        split_stride, k_stride, _, tr_stride, s_stride = out_strides  # one input channel: c is 0
        return KernelLaunch(
            kernels._conv3d_wgrad_depthwise_kernel,
            (cdiv(problem.k, config.block_n), taps, split),
            (problem.n, problem.d, problem.h, problem.w, problem.o, problem.p, problem.q, problem.k, chunk,
             input.stride(), grad_output.stride(),
             (split_stride, k_stride, tr_stride * problem.r, tr_stride, s_stride)),
            {
                "MULTIPLIER": problem.k_per_group,
                "GEOMETRY": geometry_3d(problem),
                "NUMERICS": elementwise_numerics(index_64, input.dtype),
                "BLOCK_M": config.block_m,
                "BLOCK_N": config.block_n,
                "num_warps": config.num_warps,
            },
        )  # fmt: skip

    k, c, t, r, s = grad_weight.shape
    # As `prepare_wgrad`: dW (K, 1, T, R, S) as (K, 1, T*R, S), so the ordered sum's walk covers the depth.
    folded = dataclasses.replace(problem, r=t * r, depth=None)
    return split_or_direct(partial_launch, split, grad_weight.view(k, c, t * r, s), folded)


def prepare_depthwise_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> Callable[..., None]:  # fmt: skip
    """dX of a stride-1, multiplier-1 depthwise 3-D convolution: the depthwise forward kernel on dY
    with the weight read back to front (`arithmetic.dgrad_as_depthwise`), a transposed
    convolution's fused tail included; a dgrad run (`dgrad.dgrad_run`'s arguments)."""
    layout = CHANNELS_LAST if is_channels_last_like(grad_input) else CONTIGUOUS
    flipped = dgrad_as_depthwise(problem, layout)
    run = prepare_depthwise_forward(grad_output, weight, bias, grad_input, flipped, config, epilogue, flip_taps=True)
    return as_dgrad_run(run)
