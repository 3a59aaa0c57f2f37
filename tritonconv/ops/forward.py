"""Forward pass: prepare a variant's launch for a call's tensors, split over the batch when needed.

`prepare_forward` returns the call's launch: `run(x, weight, bias, y, residual, preactivation)`,
valid for any tensors with the same shapes, strides, dtypes and alignment as the ones it was
prepared with. Which variant serves a problem is the planning layer's choice (`registry`); here
only its launch is built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import kernels
from ..problem.arithmetic import ConvProblem, is_channels_last_like
from ..problem.config import KernelConfig
from .common import ForwardChunk, LaunchFlags, batch_chunks, forward_pointers, needs_int64
from .epilogue import NO_EPILOGUE, Epilogue

ForwardRun = Callable[..., None]


def prepare_forward(
    prepare_variant: Callable,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    config: KernelConfig,
    epilogue: Epilogue = NO_EPILOGUE,
    **variant_options: object,
) -> ForwardRun:
    """Y = conv2d(x, weight) + bias (and the epilogue) for a 4-D input, read and written through
    strides. The batch is split into launches whose N*P*Q fits 32-bit tile indexing; offsets that
    need 64 bits get them in-kernel."""
    flags = LaunchFlags.for_call(
        x.dtype,
        kernels._conv2d_fwd_implicit_gemm_kernel,
        needs_int64(x, weight, y, *epilogue.tensors()),
        is_channels_last_like(x),
    )
    chunks = batch_chunks(problem.n, problem.p * problem.q, config.block_m)
    if len(chunks) == 1:  # the usual case: no views to build
        launch = prepare_variant(ForwardChunk(x, weight, bias, y, problem, config, flags, epilogue), **variant_options)

        def run(x, weight, bias, y, residual=None, preactivation=None) -> None:
            launch(*forward_pointers(x, weight, bias, y, residual, preactivation))

        return run
    launches = [
        (start, stop, prepare_variant(ForwardChunk(x[start:stop], weight, bias, y[start:stop], problem, config, flags,
                                                   epilogue.chunk(start, stop)), **variant_options))
        for start, stop in chunks
    ]  # fmt: skip

    def run_chunks(x, weight, bias, y, residual=None, preactivation=None) -> None:
        for start, stop, launch in launches:
            chunk = (t if t is None else t[start:stop] for t in (residual, preactivation))
            launch(*forward_pointers(x[start:stop], weight, bias, y[start:stop], *chunk))

    return run_chunks
