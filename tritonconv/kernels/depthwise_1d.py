"""Depthwise 1-D convolution over long sequences: the short causal convolutions of Mamba-style
models (kernel width 2-8, one channel per group, stride 1), memory-bound by design.

The call arrives as the 2-D problem with H = 1 that `conv1d` makes of it: x (N, C, 1, L_in),
weight (C, 1, 1, S), y (N, C, 1, L_out). Each output is S multiply-adds, so the floor is HBM
traffic: one read of x and one write of y. Both kernels walk the sequence in BLOCK_L positions by
BLOCK_C channels of one sequence; the tile is vectorised along whichever axis has the unit stride
(L for (B, C, L) contiguous, C for the (B, L, C) layout these models keep), which Triton's
contiguity analysis reads off the specialised unit stride.

- Forward: every tap's window is the same tile shifted by dil * s, so after the first tap its
  loads hit the L1 cache and x is read from HBM about once. The leading padding is masked, and so
  is the trailing one the output's length implies: a causal convolution (padding S - 1 at the start
  only) writes exactly L outputs, no padded tail. FLIP_TAPS reads the weight back to front: the
  input gradient of a stride-1 depthwise convolution is this kernel on dY with the padding mirrored
  (`arithmetic.dgrad_as_depthwise`). The tail is the forward kernels' (`common.store_output`): bias,
  residual, pre-activation, activation (the SiLU these models apply) before the store.
- Weight and bias gradient: dW[c, s] = sum over (n, t) of dY[n, c, t] * x[n, c, t + s*dil - pad],
  db[c] = sum of dY. A program takes BLOCK_C channels and one chunk of the N * L_out rows, loads
  each dY tile once and the x tiles of all taps as one [TAPS, BLOCK_L, BLOCK_C] tile, and writes its
  chunk's partial sums; the chunks are added in index order (`wgrad._sum_splits_kernel`), so the
  result is the same bit for bit on every run. The general depthwise weight gradient reads dY once
  per tap instead.
"""

import triton
import triton.language as tl

from .common import store_output, widen, zero_accumulator


@triton.jit
def _conv1d_depthwise_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    L_IN, L_OUT, C, L_BLOCKS,
    x_strides, w_strides, stride_bias, y_strides, r_strides,
    GEOMETRY: tl.constexpr, EPILOGUE: tl.constexpr, FLIP_TAPS: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Positions [l0, l0 + BLOCK_L) by channels [c0, c0 + BLOCK_C) of one sequence: grid axis 0
    holds each sequence's L_BLOCKS position blocks in turn, axis 1 the channel blocks. The weight
    strides are (c, s); GEOMETRY's stride is 1 and its r is 1."""
    stride_xn, stride_xc, _, stride_xl = x_strides
    stride_wc, stride_ws = w_strides
    S: tl.constexpr = GEOMETRY.s
    INDEX_64: tl.constexpr = NUMERICS.index_64
    pid = tl.program_id(0)
    offs_l = widen((pid % L_BLOCKS) * BLOCK_L + tl.arange(0, BLOCK_L), INDEX_64)
    offs_c = widen(tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C), INDEX_64)
    image = widen(pid // L_BLOCKS, INDEX_64)
    mask_l = offs_l < L_OUT
    mask_c = offs_c < C
    x_channels = image * stride_xn + offs_c * stride_xc

    acc = zero_accumulator(BLOCK_L, BLOCK_C, NUMERICS)
    for s in tl.static_range(S):
        in_l = offs_l - GEOMETRY.pad_w + s * GEOMETRY.dil_w
        inside = mask_l & (in_l >= 0) & (in_l < L_IN)
        x = tl.load(x_ptr + (in_l * stride_xl)[:, None] + x_channels[None, :], mask=inside[:, None] & mask_c[None, :],
                    other=0.0)  # fmt: skip
        tap = S - 1 - s if FLIP_TAPS else s
        weight = tl.load(w_ptr + offs_c * stride_wc + tap * stride_ws, mask=mask_c, other=0.0)
        acc += x.to(acc.dtype) * weight.to(acc.dtype)[None, :]

    if EPILOGUE.has_bias:
        acc += tl.load(bias_ptr + offs_c * stride_bias, mask=mask_c, other=0.0).to(acc.dtype)[None, :]
    stride_yn, stride_yc, _, stride_yl = y_strides
    stride_rn, stride_rc, _, stride_rl = r_strides
    y_offs = (offs_l * stride_yl)[:, None] + (image * stride_yn + offs_c * stride_yc)[None, :]
    r_offs = (offs_l * stride_rl)[:, None] + (image * stride_rn + offs_c * stride_rc)[None, :]
    store_output(acc, y_ptr, y_offs, mask_l[:, None] & mask_c[None, :], residual_ptr, r_offs, z_ptr, EPILOGUE)


@triton.jit
def _conv1d_depthwise_wgrad_kernel(
    x_ptr, dy_ptr, partial_ptr, bias_partial_ptr,
    L_IN, L_OUT, C, ROWS, chunk,
    x_strides, dy_strides, out_strides, bias_offset, stride_bias_split, stride_bias,
    GEOMETRY: tl.constexpr, HAS_BIAS: tl.constexpr, TAPS: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Partial dW (and db with HAS_BIAS) of channels [c0, c0 + BLOCK_C) over rows [split * chunk,
    + chunk) of the N * L_out (sequence, position) rows. Partials go through (split, c, s) strides
    (a workspace, or dW itself with one split) and db's through (offset, split stride, stride).
    TAPS is the power of two >= S."""
    stride_xn, stride_xc, _, stride_xl = x_strides
    stride_dyn, stride_dyc, _, stride_dyl = dy_strides
    stride_out_split, stride_out_c, stride_out_s = out_strides
    INDEX_64: tl.constexpr = NUMERICS.index_64
    split = tl.program_id(1)
    offs_c = widen(tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C), INDEX_64)
    mask_c = offs_c < C
    taps = tl.arange(0, TAPS)
    mask_taps = taps < GEOMETRY.s
    start = widen(split, INDEX_64) * chunk
    end = tl.minimum(start + chunk, ROWS)

    acc = zero_accumulator(TAPS, BLOCK_C, NUMERICS)
    bias_acc = tl.sum(zero_accumulator(TAPS, BLOCK_C, NUMERICS), axis=0)
    for row0 in range(start, end, BLOCK_L):
        rows = row0 + tl.arange(0, BLOCK_L)
        mask_rows = rows < end
        image = rows // L_OUT
        position = rows % L_OUT
        dy_offs = (image * stride_dyn + position * stride_dyl)[:, None] + (offs_c * stride_dyc)[None, :]
        dy = tl.load(dy_ptr + dy_offs, mask=mask_rows[:, None] & mask_c[None, :], other=0.0).to(acc.dtype)
        in_l = position[None, :] - GEOMETRY.pad_w + (taps * GEOMETRY.dil_w)[:, None]  # [TAPS, BLOCK_L]
        inside = mask_taps[:, None] & mask_rows[None, :] & (in_l >= 0) & (in_l < L_IN)
        x_offs = (
            (image * stride_xn)[None, :, None] + (in_l * stride_xl)[:, :, None] + (offs_c * stride_xc)[None, None, :]
        )
        x = tl.load(x_ptr + x_offs, mask=inside[:, :, None] & mask_c[None, None, :], other=0.0).to(acc.dtype)
        acc += tl.sum(x * dy[None, :, :], axis=1)
        if HAS_BIAS:
            bias_acc += tl.sum(dy, axis=0)

    out_offs = split * stride_out_split + (taps * stride_out_s)[:, None] + (offs_c * stride_out_c)[None, :]
    tl.store(partial_ptr + out_offs, acc.to(partial_ptr.dtype.element_ty), mask=mask_taps[:, None] & mask_c[None, :])
    if HAS_BIAS:
        bias_offs = bias_offset + split * stride_bias_split + offs_c * stride_bias
        tl.store(bias_partial_ptr + bias_offs, bias_acc.to(bias_partial_ptr.dtype.element_ty), mask=mask_c)
