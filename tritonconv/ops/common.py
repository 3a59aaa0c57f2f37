"""What every launcher shares: the per-launch flags and the 32/64-bit indexing decisions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..problem.arithmetic import ConvProblem
from ..problem.runtime import fp32_dot_precision, is_interpreted
from .epilogue import Epilogue

INT32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class LaunchFlags:
    """Compile-time switches decided once per call from the tensors, shared by every pass and variant."""

    index_64: bool
    acc_fp64: bool
    upcast_operands: bool
    dot_precision: str
    channels_inner: bool

    @classmethod
    def for_call(cls, dtype: torch.dtype, kernel: object, index_64: bool, channels_inner: bool) -> LaunchFlags:
        """fp64 accumulates in fp64; bf16 tiles are upcast only where `kernel` is interpreted (the
        interpreter multiplies bf16 wrongly); fp32 follows torch's TF32 switch."""
        return cls(
            index_64=index_64,
            acc_fp64=dtype == torch.float64,
            upcast_operands=is_interpreted(kernel) and dtype == torch.bfloat16,
            dot_precision=dot_precision(dtype),
            channels_inner=channels_inner,
        )

    def numeric_kwargs(self) -> dict[str, bool | str]:
        """The accumulate/upcast/precision constexprs every tl.dot kernel takes."""
        return {
            "ACC_FP64": self.acc_fp64,
            "UPCAST_OPERANDS": self.upcast_operands,
            "DOT_PRECISION": self.dot_precision,
        }


def max_element_offset(tensor: torch.Tensor) -> int:
    """Largest element offset any in-bounds index of `tensor` reaches from its data pointer."""
    if tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)):
        return max(tensor.numel() - 1, 0)  # dense: the fast answer for the usual call
    return sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if size)


def needs_int64(*tensors: torch.Tensor) -> bool:
    """True when some tensor spans more elements than 32-bit offsets can address."""
    return max(max_element_offset(t) for t in tensors) > INT32_LIMIT


def batch_chunks(n: int, pixels: int, block_m: int) -> list[tuple[int, int]]:
    """Split the batch so each launch's N*P*Q (plus a tile of overshoot) fits 32-bit indexing."""
    per_launch = (INT32_LIMIT - block_m) // pixels
    if per_launch < 1:
        raise RuntimeError(f"an output of {pixels} pixels per image is too large for tritonconv's 32-bit tile indexing")
    return [(start, min(start + per_launch, n)) for start in range(0, n, per_launch)]


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: torch's TF32 choice for fp32, exact ('ieee') for everything else."""
    return fp32_dot_precision() if dtype == torch.float32 else "ieee"


def geometry_kwargs(problem: ConvProblem) -> dict[str, int]:
    """Kernel size, stride, leading padding and dilation as the kernels' constexpr keywords."""
    return {"STRIDE_H": problem.stride[0], "STRIDE_W": problem.stride[1], **tap_kwargs(problem)}


def tap_kwargs(problem: ConvProblem) -> dict[str, int]:
    """Kernel size, leading padding and dilation: where each tap reads (the stride-1 kernels' geometry)."""
    return {
        "R": problem.r,
        "S": problem.s,
        "PAD_H": problem.padding[0],
        "PAD_W": problem.padding[1],
        "DIL_H": problem.dilation[0],
        "DIL_W": problem.dilation[1],
    }


def forward_strides(
    x: torch.Tensor, weight_strides: tuple[int, ...], bias: torch.Tensor | None, y: torch.Tensor, epilogue: Epilogue
) -> tuple[int, ...]:
    """The stride arguments every forward kernel takes, in their order: input, the weight strides
    the kernel reads, bias (0 without one), output, residual (zeros without one)."""
    bias_stride = 0 if bias is None else bias.stride(0)
    return (*x.stride(), *weight_strides, bias_stride, *y.stride(), *epilogue.residual_strides())


def forward_constexprs(bias: torch.Tensor | None, epilogue: Epilogue) -> dict[str, object]:
    """The bias and epilogue switches every forward kernel takes."""
    return {"HAS_BIAS": bias is not None, **epilogue.kwargs()}


def forward_pointers(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    residual: torch.Tensor | None,
    preactivation: torch.Tensor | None,
) -> tuple[torch.Tensor, ...]:
    """The forward kernels' six pointers; an absent bias, residual or pre-activation is stood in for
    by a tensor the kernel never reads."""
    return (
        x,
        weight,
        weight if bias is None else bias,
        y,
        y if residual is None else residual,
        y if preactivation is None else preactivation,
    )
