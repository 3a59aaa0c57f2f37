"""Input gradient as an implicit GEMM: dX[m, c] = sum_(k,r,s) dY[n, k, p, q] * W[k, c, r, s].

M runs over input pixels (N*H*W), N over one group's input channels, and the reduction over the
group's (K/g)*R*S output-channel taps. Input pixel h received tap r from output row
p = (h + pad - r*dil) / stride, which exists only when that division is exact and lands in
[0, P); strided convolutions are handled by masking the taps that do not, with no zero-stuffed
copy of dY and no Python loop over stride phases.
"""

import triton
import triton.language as tl

from .indexing import group_and_tile, output_pixels, reduction_taps
from .tile import zero_accumulator


@triton.jit
def _conv2d_dgrad_kernel(
    dy_ptr,
    w_ptr,
    dx_ptr,
    N,
    H,
    W,
    P,
    Q,
    C_PER_GROUP,
    stride_dyn,
    stride_dyk,
    stride_dyp,
    stride_dyq,
    stride_wk,
    stride_wc,
    stride_wr,
    stride_ws,
    stride_dxn,
    stride_dxc,
    stride_dxh,
    stride_dxw,
    K_PER_GROUP: tl.constexpr,
    R: tl.constexpr,
    S: tl.constexpr,
    STRIDE_H: tl.constexpr,
    STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr,
    PAD_W: tl.constexpr,
    DIL_H: tl.constexpr,
    DIL_W: tl.constexpr,
    GROUPS: tl.constexpr,
    CHANNELS_INNER: tl.constexpr,
    INDEX_64: tl.constexpr,
    ACC_FP64: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """One BLOCK_M (input pixels) x BLOCK_N (input channels of a group) tile of dX."""
    GEMM_K: tl.constexpr = K_PER_GROUP * R * S
    pid = tl.program_id(0)
    M = N * H * W
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(C_PER_GROUP, BLOCK_N)
    group, pid_m, pid_n = group_and_tile(pid, num_pid_m, num_pid_n, GROUPS, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < C_PER_GROUP
    image, in_h, in_w = output_pixels(offs_m, H, W, INDEX_64)
    group_channel = offs_n  # the weight's dim 1 counts channels within the group
    in_channel = group * C_PER_GROUP + offs_n
    first_out_channel = group * K_PER_GROUP
    if INDEX_64:
        group_channel = group_channel.to(tl.int64)
        in_channel = in_channel.to(tl.int64)
        first_out_channel = first_out_channel.to(tl.int64)
    dy_row = image * stride_dyn + first_out_channel * stride_dyk
    w_col = group_channel * stride_wc

    acc = zero_accumulator(BLOCK_M, BLOCK_N, ACC_FP64)
    for k0 in range(0, GEMM_K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GEMM_K
        out_channel, tap_r, tap_s = reduction_taps(offs_k, K_PER_GROUP, R, S, CHANNELS_INNER)
        if INDEX_64:
            out_channel = out_channel.to(tl.int64)
        num_h = in_h[:, None] + PAD_H - (tap_r * DIL_H)[None, :]
        num_w = in_w[:, None] + PAD_W - (tap_s * DIL_W)[None, :]
        out_h = num_h // STRIDE_H
        out_w = num_w // STRIDE_W
        hit = (num_h >= 0) & (num_w >= 0) & (num_h % STRIDE_H == 0) & (num_w % STRIDE_W == 0)
        hit = hit & (out_h < P) & (out_w < Q)
        dy_offs = dy_row[:, None] + (out_channel * stride_dyk)[None, :] + out_h * stride_dyp + out_w * stride_dyq
        a = tl.load(dy_ptr + dy_offs, mask=mask_m[:, None] & mask_k[None, :] & hit, other=0.0)
        w_offs = (
            w_col[None, :]
            + ((first_out_channel + out_channel) * stride_wk + tap_r * stride_wr + tap_s * stride_ws)[:, None]
        )
        b = tl.load(w_ptr + w_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST_OPERANDS:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)

    dx_row = image * stride_dxn + in_h * stride_dxh + in_w * stride_dxw
    dx_offs = dx_row[:, None] + (in_channel * stride_dxc)[None, :]
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
