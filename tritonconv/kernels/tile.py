"""Tile set-up and tear-down the kernels share, as `@triton.jit` helpers inlined into each kernel."""

import triton
import triton.language as tl

from .epilogue import activate


@triton.jit
def zero_accumulator(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC_FP64: tl.constexpr):
    """A BLOCK_M x BLOCK_N accumulator of zeros: fp64 for fp64 convolutions, fp32 for the rest."""
    if ACC_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    return acc


@triton.jit
def store_output(
    acc,
    y_ptr,
    y_offs,
    mask,
    residual_ptr,
    r_offs,
    z_ptr,
    HAS_RESIDUAL: tl.constexpr,
    STORE_PREACTIVATION: tl.constexpr,
    ACTIVATION: tl.constexpr,
    NEGATIVE_SLOPE: tl.constexpr,
):
    """The forward kernels' tail once the bias is in: add the residual, keep the pre-activation
    (at the output's offsets) when the backward needs it, apply the activation, store. Offsets and
    masks are any shape that matches `acc`."""
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptr + r_offs, mask=mask, other=0.0).to(acc.dtype)
    if STORE_PREACTIVATION:
        tl.store(z_ptr + y_offs, acc.to(z_ptr.dtype.element_ty), mask=mask)
    acc = activate(acc, ACTIVATION, NEGATIVE_SLOPE)
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask)
