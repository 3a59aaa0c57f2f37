"""Prepare the long-sequence depthwise 1-D kernels' launches (`kernels/depthwise_1d.py`): the
forward, the stride-1 input gradient (the forward kernel on dY with the taps flipped) and the weight
gradient with the bias gradient summed from the same dY tiles.

Every tensor is the 4-D (N, C, 1, L) form the 2-D path gives a conv1d, read through its strides.
The grid's first axis holds every sequence's position blocks, so a batch of any size fits it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import ConvProblem, cdiv, next_power_of_2
from ..problem.config import KernelConfig
from .common import (
    INT32_LIMIT,
    ForwardChunk,
    elementwise_numerics,
    epilogue_flags,
    forward_strides,
    geometry,
    needs_int64,
)
from .dgrad import DgradRun, prepare_flipped_forward
from .epilogue import NO_EPILOGUE, Epilogue
from .launch import KernelLaunch
from .wgrad import WgradRun, split_or_direct, split_reduction


def prepare(chunk: ForwardChunk, flip_taps: bool = False) -> KernelLaunch:
    """The forward's launch over one batch chunk, taking (x, weight, bias, y, residual, z)."""
    x, weight, bias, y, problem, config, flags, epilogue = chunk
    position_blocks = cdiv(problem.q, config.block_m)
    return KernelLaunch(
        kernels._conv1d_depthwise_fwd_kernel,
        (x.shape[0] * position_blocks, cdiv(problem.k, config.block_n)),
        (problem.w, problem.q, problem.k, position_blocks,
         *forward_strides(x, (weight.stride(0), weight.stride(3)), bias, y, epilogue)),
        {
            "GEOMETRY": geometry(problem),
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "FLIP_TAPS": flip_taps,
            "NUMERICS": elementwise_numerics(flags.index_64, x.dtype),
            "BLOCK_L": config.block_m,
            "BLOCK_C": config.block_n,
            "num_warps": config.num_warps,
        },
    )  # fmt: skip


def prepare_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> DgradRun:  # fmt: skip
    """dX of a stride-1 depthwise 1-D convolution: the forward kernel on dY with the weight read back
    to front and the padding mirrored (`arithmetic.dgrad_as_depthwise`); a transposed convolution's
    fused tail included."""
    return prepare_flipped_forward(prepare, grad_output, weight, grad_input, problem, config, bias, epilogue)


def prepare_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, grad_bias: torch.Tensor | None = None,
) -> WgradRun:  # fmt: skip
    """dW (and db with `grad_bias`) over the N * L_out rows, split `split_k` ways and summed in
    order; `run(input, grad_output, grad_weight)` or, with `grad_bias`, `run(input, grad_output,
    grad_weight, grad_bias)`."""
    rows = problem.n * problem.q
    row_numel = grad_weight.numel() + (problem.k if grad_bias is not None else 0)
    split, chunk = split_reduction(rows, row_numel, config.split_k, config.block_m)
    index_64 = needs_int64(input, grad_output) or rows > INT32_LIMIT - config.block_m

    def partial_launch(out_strides: tuple[int, ...], bias_strides: tuple[int, int, int] | None = None) -> Callable:
        split_stride, c_stride, _, _, s_stride = out_strides  # (split, k, c, r, s): c and r are one wide
        launch = KernelLaunch(
            kernels._conv1d_depthwise_wgrad_kernel,
            (cdiv(problem.k, config.block_n), split),
            (problem.w, problem.q, problem.k, rows, chunk, input.stride(), grad_output.stride(),
             (split_stride, c_stride, s_stride), *(bias_strides or (0, 0, 0))),
            {
                "GEOMETRY": geometry(problem),
                "HAS_BIAS": bias_strides is not None,
                "TAPS": next_power_of_2(problem.s),
                "NUMERICS": elementwise_numerics(index_64, input.dtype),
                "BLOCK_L": config.block_m,
                "BLOCK_C": config.block_n,
                "num_warps": config.num_warps,
            },
        )  # fmt: skip

        def run(input, grad_output, out, bias_out=None) -> None:
            launch(input, grad_output, out, out if bias_out is None else bias_out)

        return run

    return split_or_direct(partial_launch, split, grad_weight, problem, grad_bias)
