"""Grouped convolution with few channels per group: BLOCK_G groups per program, on a batch axis.

A group with 4 input and 4 output channels (ResNeXt 32x4d) cannot fill a tensor-core tile on its
own, and giving each group its own program launches thousands of tiny programs that each re-read
the same input pixels. Here one program takes BLOCK_G neighbouring groups and computes them as one
3-D `tl.dot` ([G, M, K] x [G, K, N]): the groups share the pixel rows and the launch, and no program
multiplies another group's channels (a block-diagonal tile would).
"""

import triton
import triton.language as tl

from .common import dot_accumulate, inside, output_pixels, reduction_taps, row_major_tile, store_output, widen


@triton.jit
def _conv2d_fwd_grouped_tile_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    N, H, W, P, Q,
    x_strides, w_strides, stride_bias, y_strides, r_strides,
    C_PER_GROUP: tl.constexpr, K_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr,
    EPILOGUE: tl.constexpr, CHANNELS_INNER: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """A [BLOCK_G, BLOCK_M, BLOCK_N] tile: BLOCK_G groups x BLOCK_M output pixels x BLOCK_N channels
    of each group. The reduction order follows the layout, as in the implicit-GEMM kernel."""
    stride_xn, stride_xc, stride_xh, stride_xw = x_strides
    stride_wk, stride_wc, stride_wr, stride_ws = w_strides
    R: tl.constexpr = GEOMETRY.r
    S: tl.constexpr = GEOMETRY.s
    GEMM_K: tl.constexpr = C_PER_GROUP * R * S
    pid = tl.program_id(0)
    M = N * P * Q
    pid_g, pid_m, pid_n = row_major_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(K_PER_GROUP, BLOCK_N))

    offs_g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_g = offs_g < GROUPS
    mask_m = offs_m < M
    mask_n = offs_n < K_PER_GROUP
    image, out_h, out_w = output_pixels(offs_m, P, Q, NUMERICS.index_64)
    first_channel = widen(offs_g * C_PER_GROUP, NUMERICS.index_64)
    out_channel = widen(offs_g[:, None] * K_PER_GROUP + offs_n[None, :], NUMERICS.index_64)  # [G, N]
    in_h0 = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h
    in_w0 = out_w * GEOMETRY.stride_w - GEOMETRY.pad_w
    x_row = image * stride_xn  # [M]
    mask_gm = mask_g[:, None, None] & mask_m[None, :, None]  # [G, M, 1]
    mask_gn = mask_g[:, None, None] & mask_n[None, None, :]  # [G, 1, N]

    if NUMERICS.acc_fp64:
        acc = tl.zeros((BLOCK_G, BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_G, BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, GEMM_K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GEMM_K
        channel, tap_r, tap_s = reduction_taps(offs_k, C_PER_GROUP, R, S, CHANNELS_INNER)
        in_h = in_h0[:, None] + (tap_r * GEOMETRY.dil_h)[None, :]  # [M, K]
        in_w = in_w0[:, None] + (tap_s * GEOMETRY.dil_w)[None, :]
        in_bounds = inside(mask_k[None, :], in_h, in_w, H, W)
        pixel_offs = x_row[:, None] + in_h * stride_xh + in_w * stride_xw  # [M, K]
        in_channel = first_channel[:, None] + channel[None, :]  # [G, K]
        x_offs = pixel_offs[None, :, :] + (in_channel * stride_xc)[:, None, :]
        a = tl.load(x_ptr + x_offs, mask=mask_gm & in_bounds[None, :, :], other=0.0)
        w_offs = (out_channel * stride_wk)[:, None, :] + (channel * stride_wc + tap_r * stride_wr + tap_s * stride_ws)[
            None, :, None
        ]
        b = tl.load(w_ptr + w_offs, mask=mask_gn & mask_k[None, :, None], other=0.0)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    if EPILOGUE.has_bias:
        bias = tl.load(bias_ptr + out_channel * stride_bias, mask=mask_g[:, None] & mask_n[None, :], other=0.0)
        acc += bias.to(acc.dtype)[:, None, :]
    stride_yn, stride_yk, stride_yp, stride_yq = y_strides
    stride_rn, stride_rk, stride_rp, stride_rq = r_strides
    y_row = image * stride_yn + out_h * stride_yp + out_w * stride_yq  # [M]
    y_offs = y_row[None, :, None] + (out_channel * stride_yk)[:, None, :]
    r_row = image * stride_rn + out_h * stride_rp + out_w * stride_rq
    r_offs = r_row[None, :, None] + (out_channel * stride_rk)[:, None, :]
    store_output(acc, y_ptr, y_offs, mask_gm & mask_n[None, None, :], residual_ptr, r_offs, z_ptr, EPILOGUE)
