"""Forward convolution as an implicit GEMM: Y[m, n] = sum_k X_im2col[m, k] * W[k, n], one group at a time.

M runs over output pixels (N*P*Q), N over one group's output channels, and the reduction over the
flattened (C/g)*R*S taps, so a 3-channel stem fills a reduction tile with 7x7x3 taps instead of
wasting a tile per tap. The im2col matrix is never built: each tile's input addresses are computed
from the output pixel and the tap, and taps that fall in the padding are masked to zero.
"""

import triton
import triton.language as tl

from .common import (
    dot_accumulate,
    finish_pixel_tile,
    group_and_tile,
    inside,
    output_pixels,
    reduction_taps,
    tile_ranges,
    widen,
    zero_accumulator,
)


@triton.jit
def _conv2d_fwd_implicit_gemm_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    N, H, W, P, Q, K_PER_GROUP,
    x_strides, w_strides, stride_bias, y_strides, r_strides,
    C_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr, EPILOGUE: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M x BLOCK_N tile of one group's output.

    CHANNELS_INNER orders the reduction to match the input's layout (see `reduction_taps`); the
    groups GEOMETRY, EPILOGUE and NUMERICS are `constexprs.Geometry`, `EpilogueFlags` and `Numerics`.
    """
    stride_xn, stride_xc, stride_xh, stride_xw = x_strides
    stride_wk, stride_wc, stride_wr, stride_ws = w_strides
    R: tl.constexpr = GEOMETRY.r
    S: tl.constexpr = GEOMETRY.s
    GEMM_K: tl.constexpr = C_PER_GROUP * R * S
    pid = tl.program_id(0)
    M = N * P * Q
    group, pid_m, pid_n = group_and_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(K_PER_GROUP, BLOCK_N), GROUPS, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = tile_ranges(pid_m, pid_n, M, K_PER_GROUP, BLOCK_M, BLOCK_N)
    image, out_h, out_w = output_pixels(offs_m, P, Q, NUMERICS.index_64)
    out_channel = widen(group * K_PER_GROUP + offs_n, NUMERICS.index_64)
    first_channel = widen(group * C_PER_GROUP, NUMERICS.index_64)
    in_h0 = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h
    in_w0 = out_w * GEOMETRY.stride_w - GEOMETRY.pad_w
    x_row = image * stride_xn + first_channel * stride_xc
    w_col = out_channel * stride_wk

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for k0 in range(0, GEMM_K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GEMM_K
        channel, tap_r, tap_s = reduction_taps(offs_k, C_PER_GROUP, R, S, CHANNELS_INNER)
        channel = widen(channel, NUMERICS.index_64)
        in_h = in_h0[:, None] + (tap_r * GEOMETRY.dil_h)[None, :]
        in_w = in_w0[:, None] + (tap_s * GEOMETRY.dil_w)[None, :]
        x_mask = inside(mask_m[:, None] & mask_k[None, :], in_h, in_w, H, W)
        x_offs = x_row[:, None] + (channel * stride_xc)[None, :] + in_h * stride_xh + in_w * stride_xw
        a = tl.load(x_ptr + x_offs, mask=x_mask, other=0.0)
        w_offs = w_col[None, :] + (channel * stride_wc + tap_r * stride_wr + tap_s * stride_ws)[:, None]
        b = tl.load(w_ptr + w_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    finish_pixel_tile(acc, image, out_h, out_w, out_channel, mask_m, mask_n,
                      bias_ptr, stride_bias, y_ptr, y_strides, residual_ptr, r_strides, z_ptr, EPILOGUE)  # fmt: skip
