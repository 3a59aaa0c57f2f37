"""Prepare the 1x1 (GEMM) forward kernel's launch for one batch chunk, through tensor descriptors when it can."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import ConvProblem, cdiv
from .common import ForwardChunk, epilogue_flags, forward_strides
from .descriptors import aligned, dense_nhwc, descriptors_usable, rebased, tensor_descriptor
from .launch import KernelLaunch


def gemm_views(
    x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, problem: ConvProblem
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """[M, C], [K, C] and [M, K] views of input, weight and output when they are dense matrices with
    a unit inner stride and 16-byte aligned rows, the shapes a tensor descriptor (TMA) can address."""
    if (
        problem.stride != (1, 1)
        or x.element_size() not in (2, 4)
        or not descriptors_usable(x.device, kernels._conv2d_fwd_1x1_kernel)
    ):
        return None
    x_rows, y_rows = dense_nhwc(x), dense_nhwc(y)
    if x_rows is None or y_rows is None or weight.stride(1) != 1:
        return None
    views = (x_rows.reshape(-1, x.shape[1]), weight[:, :, 0, 0], y_rows.reshape(-1, y.shape[1]))
    return views if aligned(*views) else None


def prepare(chunk: ForwardChunk) -> Callable[..., None]:
    """The launch, taking (x, weight, bias, y, residual, z); through tensor descriptors when
    `gemm_views` allows, built per call over the same matrices (only their base pointers change)."""
    x, weight, bias, y, problem, config, flags, epilogue = chunk
    m = x.shape[0] * problem.p * problem.q
    views = None if epilogue.reads_or_writes_extra else gemm_views(x, weight, y, problem)
    launch = KernelLaunch(
        kernels._conv2d_fwd_1x1_kernel,
        (cdiv(m, config.block_m) * cdiv(problem.k, config.block_n),),
        (x.shape[0], problem.k, problem.p, problem.q,
         *forward_strides(x, weight.stride()[:2], bias, y, epilogue)),
        {
            "C": problem.c,
            "STRIDE_H": problem.stride[0],
            "STRIDE_W": problem.stride[1],
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "USE_DESCRIPTORS": views is not None,
            "NUMERICS": flags.numerics,
            **config.gemm_kwargs(),
        },
    )  # fmt: skip
    if views is None:
        return launch
    x_desc, w_desc, y_desc = (
        tensor_descriptor().from_tensor(view, block)
        for view, block in zip(
            views,
            ([config.block_m, config.block_k], [config.block_n, config.block_k], [config.block_m, config.block_n]),
            strict=True,
        )
    )

    def through_descriptors(x, weight, bias, y, residual, z) -> None:
        launch(rebased(x_desc, x), rebased(w_desc, weight), bias, rebased(y_desc, y), residual, z)

    return through_descriptors
