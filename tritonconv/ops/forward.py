"""Forward pass: validate where it runs, allocate the output, and launch the planned variant."""

from __future__ import annotations

import torch

from ..arithmetic import ConvProblem, is_channels_last_like
from ..dispatch import Plan, plan_forward
from ..runtime import check_device, check_dtype_supported, new_output, on_device_of
from . import conv1x1, depthwise, grouped_tile, implicit_gemm
from .common import LaunchFlags, batch_chunks, needs_int64
from .epilogue import NO_EPILOGUE, Epilogue

FORWARD_LAUNCHERS = {
    "implicit_gemm": implicit_gemm.launch,
    "conv1x1": conv1x1.launch,
    "grouped_tile": grouped_tile.launch,
    "depthwise": depthwise.launch,
}


def conv2d_fwd(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    problem: ConvProblem,
    plan: Plan | None = None,
    epilogue: Epilogue = NO_EPILOGUE,
) -> torch.Tensor:
    """Y = conv2d(input, weight) + bias for a 4-D input, read and written through strides.

    `plan` (default: `plan_forward(problem)`, what `explain` reports) names the variant and config.
    The output takes the memory format torch would give it (`problem.layout`). The batch is split
    into launches whose N*P*Q fits 32-bit indexing; offsets that need 64 bits get them in-kernel.
    `epilogue` adds a residual and applies an activation before the store (`ops/epilogue.py`).
    """
    check_device(input, implicit_gemm.KERNEL)
    check_dtype_supported(input.dtype)
    output = new_output(problem.output_shape, input, problem.memory_format)
    if output.numel() == 0:
        return output
    plan = plan or plan_forward(problem)
    launch = FORWARD_LAUNCHERS[plan.variant]
    flags = LaunchFlags.for_call(
        input.dtype,
        implicit_gemm.KERNEL,
        needs_int64(input, weight, output, *_extra(epilogue)),
        is_channels_last_like(input),
    )
    chunks = batch_chunks(problem.n, problem.p * problem.q, plan.config.block_m)
    with on_device_of(input):
        if len(chunks) == 1:  # the usual case: no views to build
            launch(input, weight, bias, output, problem, plan.config, flags, epilogue)
            return output
        for start, stop in chunks:
            chunk = epilogue.chunk(start, stop)
            launch(input[start:stop], weight, bias, output[start:stop], problem, plan.config, flags, chunk)
    return output


def _extra(epilogue: Epilogue) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in (epilogue.residual, epilogue.preactivation) if t is not None)
