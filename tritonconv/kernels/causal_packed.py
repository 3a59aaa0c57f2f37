"""The causal depthwise conv1d of several sequences packed in one row (`seq_idx`, the causal-conv1d
package's training form of a packed batch): a tap reads an input only where the input belongs to the
same sequence as the output, and a padding position (`seq_idx` < 0) outputs exactly 0.

x and y are (B, C, L) in any strides, `seq_idx` (B, L) int32/int64, the weight (C, W). Both kernels
walk BLOCK_L positions by BLOCK_C channels; they load the sequence numbers once per tap beside x,
so the masking costs one small integer load per tap and position (served from cache after the first).

- `_causal_seq_kernel`: the forward, and with FLIP the input gradient. The forward's output t reads
  positions t - (W-1-s)*dil for taps s; the input gradient of position t reads dY at t + s*dil with
  the weight back to front. In both a tap counts only where seq_idx there equals seq_idx at t, and
  the result at a padding position is 0: the padding's outputs are constants (no gradient flows from
  them), and an input of the padding feeds only padding outputs, so its gradient is 0 too.
- `_causal_seq_wgrad_kernel`: dW[c, s] = sum over non-padding (b, t) of dY[b, c, t] * x[b, c,
  t - (W-1-s)*dil] where that input is in t's sequence; db[c] = sum over non-padding (b, t) of dY.
  A program takes BLOCK_C channels and one chunk of the B * L rows, and writes its chunk's partial
  sums (in the accumulator's dtype); the caller adds the chunks in index order, so the result is
  the same bit for bit on every run.
"""

import triton
import triton.language as tl

from .common import bias_then_silu


@triton.jit
def _accumulator(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC_FP64: tl.constexpr):
    if ACC_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    return acc


@triton.jit
def _causal_seq_kernel(
    x_ptr, w_ptr, bias_ptr, seq_ptr, y_ptr,
    C, L, L_BLOCKS,
    x_strides, w_strides, stride_bias, seq_strides, y_strides,
    WIDTH: tl.constexpr, DILATION: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Positions [l0, l0 + BLOCK_L) by channels [c0, c0 + BLOCK_C) of row b: grid axis 0 holds each
    row's L_BLOCKS position blocks in turn, axis 1 the channel blocks."""
    stride_xb, stride_xc, stride_xl = x_strides
    stride_wc, stride_ws = w_strides
    stride_sb, stride_sl = seq_strides
    stride_yb, stride_yc, stride_yl = y_strides
    pid = tl.program_id(0)
    row = (pid // L_BLOCKS).to(tl.int64)
    offs_l = ((pid % L_BLOCKS) * BLOCK_L + tl.arange(0, BLOCK_L)).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_l = offs_l < L
    mask_c = offs_c < C
    seq_row = seq_ptr + row * stride_sb
    own = tl.load(seq_row + offs_l * stride_sl, mask=mask_l, other=-1)
    x_channels = (row * stride_xb + offs_c * stride_xc)[None, :]

    acc = _accumulator(BLOCK_L, BLOCK_C, ACC_FP64)
    for s in tl.static_range(WIDTH):
        if FLIP:  # the input gradient: dY ahead of t, the weight back to front
            source = offs_l + s * DILATION
            tap = WIDTH - 1 - s
        else:
            source = offs_l - (WIDTH - 1 - s) * DILATION
            tap = s
        inside = mask_l & (source >= 0) & (source < L)
        same = inside & (tl.load(seq_row + source * stride_sl, mask=inside, other=-1) == own)
        x = tl.load(x_ptr + x_channels + (source * stride_xl)[:, None], mask=same[:, None] & mask_c[None, :], other=0.0)
        weight = tl.load(w_ptr + offs_c * stride_wc + tap * stride_ws, mask=mask_c, other=0.0)
        acc += x.to(acc.dtype) * weight.to(acc.dtype)[None, :]
    acc = bias_then_silu(acc, bias_ptr, offs_c, stride_bias, mask_c, HAS_BIAS, SILU)
    acc = tl.where((own >= 0)[:, None], acc, 0.0)  # padding: exactly 0, bias included
    y_offs = (row * stride_yb + offs_c * stride_yc)[None, :] + (offs_l * stride_yl)[:, None]
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_l[:, None] & mask_c[None, :])


@triton.jit
def _causal_seq_wgrad_kernel(
    x_ptr, dy_ptr, seq_ptr, partial_ptr, bias_partial_ptr,
    C, L, ROWS, chunk,
    x_strides, dy_strides, seq_strides,
    WIDTH: tl.constexpr, TAPS: tl.constexpr, DILATION: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACC_FP64: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Partial dW (TAPS, C) and db (C,) of channels [c0, c0 + BLOCK_C) over rows [split * chunk,
    + chunk) of the B * L (row, position) pairs, written contiguously at split's place (TAPS is the
    power of two >= WIDTH; the taps past WIDTH are written as 0)."""
    stride_xb, stride_xc, stride_xl = x_strides
    stride_dyb, stride_dyc, stride_dyl = dy_strides
    stride_sb, stride_sl = seq_strides
    split = tl.program_id(1)
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    taps = tl.arange(0, TAPS)
    start = split.to(tl.int64) * chunk
    end = tl.minimum(start + chunk, ROWS)

    acc = _accumulator(TAPS, BLOCK_C, ACC_FP64)
    bias_acc = tl.sum(_accumulator(TAPS, BLOCK_C, ACC_FP64), axis=0)
    for row0 in range(start, end, BLOCK_L):
        rows = row0 + tl.arange(0, BLOCK_L)
        image = rows // L
        position = rows % L
        own = tl.load(seq_ptr + image * stride_sb + position * stride_sl, mask=rows < end, other=-1)
        live = own >= 0  # rows past the chunk read -1: no padding, no chunk's end, contributes nothing
        dy_offs = (image * stride_dyb + position * stride_dyl)[:, None] + (offs_c * stride_dyc)[None, :]
        dy = tl.load(dy_ptr + dy_offs, mask=live[:, None] & mask_c[None, :], other=0.0).to(acc.dtype)
        source = position[None, :] - ((WIDTH - 1 - taps) * DILATION)[:, None]  # [TAPS, BLOCK_L]
        inside = (taps < WIDTH)[:, None] & live[None, :] & (source >= 0)
        source_seq = tl.load(seq_ptr + image[None, :] * stride_sb + source * stride_sl, mask=inside, other=-1)
        same = inside & (source_seq == own[None, :])
        x_rows = (image * stride_xb)[None, :] + source * stride_xl  # [TAPS, BLOCK_L]
        x_offs = x_rows[:, :, None] + (offs_c * stride_xc)[None, None, :]
        x = tl.load(x_ptr + x_offs, mask=same[:, :, None] & mask_c[None, None, :], other=0.0).to(acc.dtype)
        acc += tl.sum(x * dy[None, :, :], axis=1)
        if HAS_BIAS:
            bias_acc += tl.sum(dy, axis=0)

    out_offs = split.to(tl.int64) * TAPS * C + (taps * C)[:, None] + offs_c[None, :]
    tl.store(partial_ptr + out_offs, acc, mask=mask_c[None, :])
    if HAS_BIAS:
        tl.store(bias_partial_ptr + split.to(tl.int64) * C + offs_c, bias_acc, mask=mask_c)
