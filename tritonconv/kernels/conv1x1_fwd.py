"""1x1 convolution as the GEMM it is: Y[m, k] = sum_c X[m, c] * W[k, c], m over output pixels.

No taps, no padding: each row's input address is computed once per tile and the reduction walks
the channels directly (no division in the inner loop, no bounds masks beyond the ragged edges).
For a dense channels_last input at stride 1, X is literally an [N*H*W, C] matrix and the output an
[N*P*Q, K] one; then USE_DESCRIPTORS loads and stores through tensor descriptors (TMA on Hopper).
"""

import triton
import triton.language as tl

from .common import (
    activate_as,
    dot_accumulate,
    finish_pixel_tile,
    output_pixels,
    swizzled_tile,
    tile_ranges,
    widen,
    zero_accumulator,
)


@triton.jit
def _conv2d_fwd_1x1_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    N, K, P, Q,
    x_strides, w_strides, stride_bias, y_strides, r_strides,
    C: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, EPILOGUE: tl.constexpr,
    USE_DESCRIPTORS: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M x BLOCK_N output tile. With USE_DESCRIPTORS, x_ptr, w_ptr and y_ptr are tensor
    descriptors over the [M, C], [K, C] and [M, K] matrices (blocks [BM, BK], [BN, BK], [BM, BN])."""
    pid = tl.program_id(0)
    M = N * P * Q
    pid_m, pid_n = swizzled_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_N), GROUP_M)
    offs_m, offs_n, mask_m, mask_n = tile_ranges(pid_m, pid_n, M, K, BLOCK_M, BLOCK_N)
    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)

    if USE_DESCRIPTORS:
        for k0 in range(0, C, BLOCK_K):
            a = x_ptr.load([pid_m * BLOCK_M, k0])
            b = w_ptr.load([pid_n * BLOCK_N, k0]).T
            acc = dot_accumulate(acc, a, b, NUMERICS)
    else:
        stride_xn, stride_xc, stride_xh, stride_xw = x_strides
        stride_wk, stride_wc = w_strides
        image, out_h, out_w = output_pixels(offs_m, P, Q, NUMERICS.index_64)
        out_channel = widen(offs_n, NUMERICS.index_64)
        x_row = image * stride_xn + (out_h * STRIDE_H) * stride_xh + (out_w * STRIDE_W) * stride_xw
        w_col = out_channel * stride_wk
        for k0 in range(0, C, BLOCK_K):
            offs_c = k0 + tl.arange(0, BLOCK_K)
            mask_c = offs_c < C
            offs_c = widen(offs_c, NUMERICS.index_64)
            a = tl.load(
                x_ptr + x_row[:, None] + (offs_c * stride_xc)[None, :],
                mask=mask_m[:, None] & mask_c[None, :],
                other=0.0,
            )
            b = tl.load(
                w_ptr + w_col[None, :] + (offs_c * stride_wc)[:, None],
                mask=mask_c[:, None] & mask_n[None, :],
                other=0.0,
            )
            acc = dot_accumulate(acc, a, b, NUMERICS)

    if USE_DESCRIPTORS:  # the launcher takes this path only without a residual or a saved pre-activation
        if EPILOGUE.has_bias:
            bias = tl.load(bias_ptr + offs_n * stride_bias, mask=mask_n, other=0.0)
            acc += bias.to(acc.dtype)[None, :]
        acc = activate_as(acc, EPILOGUE)
        y_ptr.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(y_ptr.dtype))
    else:
        finish_pixel_tile(acc, image, out_h, out_w, out_channel, mask_m, mask_n, bias_ptr, stride_bias,
                          y_ptr, y_strides, residual_ptr, r_strides, z_ptr, EPILOGUE)  # fmt: skip
