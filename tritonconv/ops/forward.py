"""Forward launcher: run the implicit-GEMM kernel for a validated `ConvProblem`."""

from __future__ import annotations

import torch
import triton

from ..arithmetic import CHANNELS_LAST, ConvProblem, is_channels_last_like
from ..config import KernelConfig, heuristic_config
from ..kernels import _conv2d_fwd_implicit_gemm_kernel
from ..runtime import (
    check_device,
    check_dtype_supported,
    fp32_dot_precision,
    is_interpreted,
    new_output,
    on_device_of,
)

INT32_LIMIT = 2**31 - 1


def max_element_offset(tensor: torch.Tensor) -> int:
    """Largest element offset any in-bounds index of `tensor` reaches from its data pointer."""
    return sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if size)


def batch_chunks(n: int, pixels: int, block_m: int) -> list[tuple[int, int]]:
    """Split the batch so each launch's N*P*Q (plus a tile of overshoot) fits 32-bit indexing."""
    per_launch = (INT32_LIMIT - block_m) // pixels
    if per_launch < 1:
        raise RuntimeError(f"an output of {pixels} pixels per image is too large for tritonconv's 32-bit tile indexing")
    return [(start, min(start + per_launch, n)) for start in range(0, n, per_launch)]


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: torch's TF32 choice for fp32, exact ('ieee') for everything else."""
    return fp32_dot_precision() if dtype == torch.float32 else "ieee"


def conv2d_fwd(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    problem: ConvProblem,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """Y = conv2d(input, weight) + bias for a 4-D input, read and written through strides.

    The output takes the memory format torch would give it (`problem.layout`). The batch is split
    into launches whose N*P*Q fits 32-bit indexing; everything else needing 64 bits is handled in
    the kernel by INDEX_64.
    """
    kernel = _conv2d_fwd_implicit_gemm_kernel
    check_device(input, kernel)
    check_dtype_supported(input.dtype)
    memory_format = torch.channels_last if problem.layout == CHANNELS_LAST else torch.contiguous_format
    output = new_output(problem.output_shape, input, memory_format)
    if output.numel() == 0:
        return output
    config = config or heuristic_config(problem)
    pixels = problem.p * problem.q
    index_64 = max(max_element_offset(t) for t in (input, weight, output)) > INT32_LIMIT
    upcast = is_interpreted(kernel) and input.dtype == torch.bfloat16
    channels_inner = is_channels_last_like(input)
    with on_device_of(input):
        for start, stop in batch_chunks(problem.n, pixels, config.block_m):
            x, y = input[start:stop], output[start:stop]
            m = x.shape[0] * pixels
            tiles = triton.cdiv(m, config.block_m) * triton.cdiv(problem.k_per_group, config.block_n)
            kernel[(problem.groups * tiles,)](
                x,
                weight,
                bias if bias is not None else weight,
                y,
                x.shape[0],
                problem.h,
                problem.w,
                problem.p,
                problem.q,
                problem.k_per_group,
                *x.stride(),
                *weight.stride(),
                bias.stride(0) if bias is not None else 0,
                *y.stride(),
                C_PER_GROUP=problem.c_per_group,
                R=problem.r,
                S=problem.s,
                STRIDE_H=problem.stride[0],
                STRIDE_W=problem.stride[1],
                PAD_H=problem.padding[0],
                PAD_W=problem.padding[1],
                DIL_H=problem.dilation[0],
                DIL_W=problem.dilation[1],
                GROUPS=problem.groups,
                HAS_BIAS=bias is not None,
                CHANNELS_INNER=channels_inner,
                INDEX_64=index_64,
                ACC_FP64=input.dtype == torch.float64,
                UPCAST_OPERANDS=upcast,
                DOT_PRECISION=dot_precision(input.dtype),
                **config.launch_kwargs(),
            )
    return output
