"""The grouped compile-time parameters the kernels take: one `tl.constexpr` per group, read as
`GEOMETRY.pad_h`, `NUMERICS.acc_fp64`, ... inside a kernel.

A group is a NamedTuple, so it is a constexpr Triton specialises on as a whole (equal groups share
a compiled kernel) and every kernel that takes it spells it the same way. The launchers in `ops/`
build them from a problem and a call's flags.
"""

from typing import NamedTuple


class Geometry(NamedTuple):
    """Kernel size, stride, leading padding and dilation of a 2-D convolution."""

    r: int
    s: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dil_h: int
    dil_w: int


class Geometry3d(NamedTuple):
    """Kernel size, stride, leading padding and dilation of a 3-D convolution (depth first)."""

    t: int
    r: int
    s: int
    stride_d: int
    stride_h: int
    stride_w: int
    pad_d: int
    pad_h: int
    pad_w: int
    dil_d: int
    dil_h: int
    dil_w: int


class Numerics(NamedTuple):
    """How a kernel computes: 64-bit offsets (some tensor spans 2**31 elements or more), an fp64
    accumulator (fp64 convolutions), fp32 copies of bf16 tiles for tl.dot (the interpreter multiplies
    bf16 wrongly) and tl.dot's input precision ('tf32' or 'ieee')."""

    index_64: bool
    acc_fp64: bool
    upcast_operands: bool
    dot_precision: str


class EpilogueFlags(NamedTuple):
    """What a forward kernel does to its tile after the reduction: add the bias, add a residual,
    keep the pre-activation, apply ACTIVATION ('' for none; `negative_slope` for leaky_relu)."""

    has_bias: bool
    has_residual: bool
    activation: str
    negative_slope: float
    store_preactivation: bool
