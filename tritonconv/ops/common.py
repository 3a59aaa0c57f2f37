"""What every launcher shares: the per-launch flags and the 32/64-bit indexing decisions, the kernels' grouped
constexprs built from a problem, and what a forward variant's `prepare` takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..kernels.constexprs import EpilogueFlags, Geometry, Geometry3d, Numerics
from ..problem.arithmetic import ConvProblem
from ..problem.config import KernelConfig
from ..problem.runtime import fp32_dot_precision, is_interpreted
from .epilogue import Epilogue, slope_constant

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

    @property
    def numerics(self) -> Numerics:
        """The NUMERICS constexpr of a tl.dot kernel."""
        return Numerics(self.index_64, self.acc_fp64, self.upcast_operands, self.dot_precision)


def elementwise_numerics(index_64: bool, dtype: torch.dtype) -> Numerics:
    """NUMERICS for a kernel without tl.dot: the upcast and the dot precision fixed, so torch's TF32
    switch does not compile it twice."""
    return Numerics(index_64, dtype == torch.float64, False, "ieee")


class ForwardChunk(NamedTuple):
    """What a forward variant's `prepare` takes: one batch chunk's tensors (4-D, read and written
    through their strides), the problem and config, the call's flags and its epilogue."""

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    y: torch.Tensor
    problem: ConvProblem
    config: KernelConfig
    flags: LaunchFlags
    epilogue: Epilogue


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


def geometry(problem: ConvProblem) -> Geometry:
    """The GEOMETRY constexpr of a 2-D problem: kernel size, stride, leading padding, dilation."""
    return Geometry(problem.r, problem.s, *problem.stride, *problem.padding, *problem.dilation)


def geometry_3d(problem: ConvProblem) -> Geometry3d:
    """The GEOMETRY constexpr of a 3-D problem, depth first on every axis."""
    depth = problem.depth
    pad_h, pad_w = problem.padding[:2]
    return Geometry3d(depth.kernel, problem.r, problem.s, depth.stride, *problem.stride,
                      depth.padding, pad_h, pad_w, depth.dilation, *problem.dilation)  # fmt: skip


def forward_strides(
    x: torch.Tensor, weight_strides: tuple[int, ...], bias: torch.Tensor | None, y: torch.Tensor, epilogue: Epilogue
) -> tuple[object, ...]:
    """The stride arguments every forward kernel takes, in their order: the input's, the weight
    strides the kernel reads, the bias's (0 without one), the output's, the residual's (zeros
    without one)."""
    bias_stride = 0 if bias is None else bias.stride(0)
    return x.stride(), tuple(weight_strides), bias_stride, y.stride(), epilogue.residual_strides(y.dim())


def epilogue_flags(bias: torch.Tensor | None, epilogue: Epilogue) -> EpilogueFlags:
    """The EPILOGUE constexpr every forward kernel takes."""
    return EpilogueFlags(
        has_bias=bias is not None,
        has_residual=epilogue.residual is not None,
        activation=epilogue.activation,
        negative_slope=slope_constant(epilogue.activation, epilogue.negative_slope),
        store_preactivation=epilogue.preactivation is not None,
    )


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
