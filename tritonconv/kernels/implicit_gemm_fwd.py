"""Forward convolution as an implicit GEMM: Y[m, n] = sum_k X_im2col[m, k] * W[k, n], one group at a time.

M runs over output pixels (N*P*Q), N over one group's output channels, and the reduction over the
flattened (C/g)*R*S taps, so a 3-channel stem fills a reduction tile with 7x7x3 taps instead of
wasting a tile per tap. The im2col matrix is never built: each tile's input addresses are computed
from the output pixel and the tap, and taps that fall in the padding are masked to zero.
"""

import triton
import triton.language as tl

from .indexing import group_and_tile, output_pixels, reduction_taps
from .tile import store_output, zero_accumulator


@triton.jit
def _conv2d_fwd_implicit_gemm_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    y_ptr,
    residual_ptr,
    z_ptr,
    N,
    H,
    W,
    P,
    Q,
    K_PER_GROUP,
    stride_xn,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wk,
    stride_wc,
    stride_wr,
    stride_ws,
    stride_bias,
    stride_yn,
    stride_yk,
    stride_yp,
    stride_yq,
    stride_rn,
    stride_rk,
    stride_rp,
    stride_rq,
    C_PER_GROUP: tl.constexpr,
    R: tl.constexpr,
    S: tl.constexpr,
    STRIDE_H: tl.constexpr,
    STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr,
    PAD_W: tl.constexpr,
    DIL_H: tl.constexpr,
    DIL_W: tl.constexpr,
    GROUPS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    NEGATIVE_SLOPE: tl.constexpr,
    STORE_PREACTIVATION: tl.constexpr,
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
    """One BLOCK_M x BLOCK_N tile of one group's output.

    CHANNELS_INNER orders the reduction to match the input's layout (see `reduction_taps`).
    INDEX_64 widens every address product when some tensor spans 2**31 elements or more.
    UPCAST_OPERANDS feeds tl.dot fp32 copies of bf16 tiles (the interpreter multiplies bf16 wrongly).
    """
    GEMM_K: tl.constexpr = C_PER_GROUP * R * S
    pid = tl.program_id(0)
    M = N * P * Q
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(K_PER_GROUP, BLOCK_N)
    group, pid_m, pid_n = group_and_tile(pid, num_pid_m, num_pid_n, GROUPS, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < K_PER_GROUP
    image, out_h, out_w = output_pixels(offs_m, P, Q, INDEX_64)
    out_channel = group * K_PER_GROUP + offs_n
    first_channel = group * C_PER_GROUP
    if INDEX_64:
        out_channel = out_channel.to(tl.int64)
        first_channel = first_channel.to(tl.int64)
    in_h0 = out_h * STRIDE_H - PAD_H
    in_w0 = out_w * STRIDE_W - PAD_W
    x_row = image * stride_xn + first_channel * stride_xc
    w_col = out_channel * stride_wk

    acc = zero_accumulator(BLOCK_M, BLOCK_N, ACC_FP64)
    for k0 in range(0, GEMM_K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GEMM_K
        channel, tap_r, tap_s = reduction_taps(offs_k, C_PER_GROUP, R, S, CHANNELS_INNER)
        if INDEX_64:
            channel = channel.to(tl.int64)
        in_h = in_h0[:, None] + (tap_r * DIL_H)[None, :]
        in_w = in_w0[:, None] + (tap_s * DIL_W)[None, :]
        x_mask = mask_m[:, None] & mask_k[None, :] & (in_h >= 0) & (in_h < H) & (in_w >= 0) & (in_w < W)
        x_offs = x_row[:, None] + (channel * stride_xc)[None, :] + in_h * stride_xh + in_w * stride_xw
        a = tl.load(x_ptr + x_offs, mask=x_mask, other=0.0)
        w_offs = w_col[None, :] + (channel * stride_wc + tap_r * stride_wr + tap_s * stride_ws)[:, None]
        b = tl.load(w_ptr + w_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST_OPERANDS:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)

    if HAS_BIAS:
        bias = tl.load(bias_ptr + out_channel * stride_bias, mask=mask_n, other=0.0)
        acc += bias.to(acc.dtype)[None, :]
    y_row = image * stride_yn + out_h * stride_yp + out_w * stride_yq
    y_offs = y_row[:, None] + (out_channel * stride_yk)[None, :]
    r_offs = (image * stride_rn + out_h * stride_rp + out_w * stride_rq)[:, None] + (out_channel * stride_rk)[None, :]
    mask_y = mask_m[:, None] & mask_n[None, :]
    store_output(acc, y_ptr, y_offs, mask_y, residual_ptr, r_offs, z_ptr,
                 HAS_RESIDUAL, STORE_PREACTIVATION, ACTIVATION, NEGATIVE_SLOPE)  # fmt: skip
