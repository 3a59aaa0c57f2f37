"""Input gradient as an implicit GEMM: dX[m, c] = sum_(k,r,s) dY[n, k, p, q] * W[k, c, r, s].

M runs over input pixels (N*H*W), N over one group's input channels, and the reduction over the
group's (K/g)*R*S output-channel taps. Input pixel h received tap r from output row
p = (h + pad - r*dil) / stride, which exists only when that division is exact and lands in
[0, P); strided convolutions are handled by masking the taps that do not, with no zero-stuffed
copy of dY and no Python loop over stride phases.
"""

import triton
import triton.language as tl

from .common import (
    dot_accumulate,
    finish_pixel_tile,
    group_and_tile,
    output_pixels,
    reduction_taps,
    tile_ranges,
    widen,
    zero_accumulator,
)


@triton.jit
def _conv2d_dgrad_kernel(
    dy_ptr, w_ptr, bias_ptr, dx_ptr, residual_ptr, z_ptr,
    N, H, W, P, Q, C_PER_GROUP,
    dy_strides, w_strides, stride_bias, dx_strides, r_strides,
    K_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr, CHANNELS_INNER: tl.constexpr,
    EPILOGUE: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M (input pixels) x BLOCK_N (input channels of a group) tile of dX. EPILOGUE is
    empty for a gradient; a transposed convolution's forward (this kernel's dX is its output) fuses
    its bias, residual and activation there as the forward kernels do."""
    stride_dyn, stride_dyk, stride_dyp, stride_dyq = dy_strides
    stride_wk, stride_wc, stride_wr, stride_ws = w_strides
    R: tl.constexpr = GEOMETRY.r
    S: tl.constexpr = GEOMETRY.s
    STRIDE_H: tl.constexpr = GEOMETRY.stride_h
    STRIDE_W: tl.constexpr = GEOMETRY.stride_w
    GEMM_K: tl.constexpr = K_PER_GROUP * R * S
    pid = tl.program_id(0)
    M = N * H * W
    group, pid_m, pid_n = group_and_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(C_PER_GROUP, BLOCK_N), GROUPS, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = tile_ranges(pid_m, pid_n, M, C_PER_GROUP, BLOCK_M, BLOCK_N)
    image, in_h, in_w = output_pixels(offs_m, H, W, NUMERICS.index_64)
    group_channel = widen(offs_n, NUMERICS.index_64)  # the weight's dim 1 counts channels within the group
    in_channel = widen(group * C_PER_GROUP + offs_n, NUMERICS.index_64)
    first_out_channel = widen(group * K_PER_GROUP, NUMERICS.index_64)
    dy_row = image * stride_dyn + first_out_channel * stride_dyk
    w_col = group_channel * stride_wc

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for k0 in range(0, GEMM_K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GEMM_K
        out_channel, tap_r, tap_s = reduction_taps(offs_k, K_PER_GROUP, R, S, CHANNELS_INNER)
        out_channel = widen(out_channel, NUMERICS.index_64)
        num_h = in_h[:, None] + GEOMETRY.pad_h - (tap_r * GEOMETRY.dil_h)[None, :]
        num_w = in_w[:, None] + GEOMETRY.pad_w - (tap_s * GEOMETRY.dil_w)[None, :]
        out_h = num_h // STRIDE_H
        out_w = num_w // STRIDE_W
        hit = (num_h >= 0) & (num_w >= 0) & (num_h % STRIDE_H == 0) & (num_w % STRIDE_W == 0)
        hit = hit & (out_h < P) & (out_w < Q)
        dy_offs = dy_row[:, None] + (out_channel * stride_dyk)[None, :] + out_h * stride_dyp + out_w * stride_dyq
        a = tl.load(dy_ptr + dy_offs, mask=mask_m[:, None] & mask_k[None, :] & hit, other=0.0)
        w_tap = (first_out_channel + out_channel) * stride_wk + tap_r * stride_wr + tap_s * stride_ws
        b = tl.load(w_ptr + (w_col[None, :] + w_tap[:, None]), mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    finish_pixel_tile(acc, image, in_h, in_w, in_channel, mask_m, mask_n,
                      bias_ptr, stride_bias, dx_ptr, dx_strides, residual_ptr, r_strides, z_ptr, EPILOGUE)  # fmt: skip
