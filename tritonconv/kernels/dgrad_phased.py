"""Input gradient by stride phase, one tap at a time: no masked-out taps, no per-element index math.

Input rows h = ph + i*stride share a phase ph, and for a phase the taps r that reach an output row
are fixed: those with (ph + pad - r*dil) divisible by the stride; they reach p = (ph + pad - r*dil)
/ stride + i. So each program takes one phase (grid axis 1), skips the other taps outright (a
scalar branch, where the masking kernel spends a tile on them: 3/4 of a 3x3 stride-2 kernel), and
for each tap it keeps walks the group's output channels in BLOCK_K slices. A tile's dY addresses
are then a per-pixel base plus a channel offset, like a plain GEMM's. At stride 1 there is one
phase and every tap is kept.
"""

import triton
import triton.language as tl

from .common import (
    dot_accumulate,
    finish_pixel_tile,
    group_and_tile,
    output_pixels,
    tile_ranges,
    widen,
    zero_accumulator,
)


@triton.jit
def _conv2d_dgrad_phased_kernel(
    dy_ptr, w_ptr, bias_ptr, dx_ptr, residual_ptr, z_ptr,
    N, H, W, P, Q, C_PER_GROUP,
    dy_strides, w_strides, stride_bias, dx_strides, r_strides,
    K_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr, EPILOGUE: tl.constexpr,
    NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M (input pixels of one phase) x BLOCK_N (input channels of a group) tile of dX.

    M counts the pixels of a phase over a ceil(H/stride_h) x ceil(W/stride_w) grid per image; rows
    and columns past the input (phases with fewer rows) are masked. EPILOGUE as the masking
    kernel's: empty for a gradient, a transposed convolution's fused tail for its forward.
    """
    stride_dyn, stride_dyk, stride_dyp, stride_dyq = dy_strides
    stride_wk, stride_wc, stride_wr, stride_ws = w_strides
    S: tl.constexpr = GEOMETRY.s
    STRIDE_H: tl.constexpr = GEOMETRY.stride_h
    STRIDE_W: tl.constexpr = GEOMETRY.stride_w
    pid = tl.program_id(0)
    phase = tl.program_id(1)
    phase_h = phase // STRIDE_W
    phase_w = phase % STRIDE_W
    rows = tl.cdiv(H, STRIDE_H)
    cols = tl.cdiv(W, STRIDE_W)
    M = N * rows * cols
    group, pid_m, pid_n = group_and_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(C_PER_GROUP, BLOCK_N), GROUPS, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = tile_ranges(pid_m, pid_n, M, C_PER_GROUP, BLOCK_M, BLOCK_N)
    image, row, col = output_pixels(offs_m, rows, cols, NUMERICS.index_64)
    in_h = phase_h + row * STRIDE_H
    in_w = phase_w + col * STRIDE_W
    mask_m = mask_m & (in_h < H) & (in_w < W)
    group_channel = widen(offs_n, NUMERICS.index_64)  # the weight's dim 1 counts channels within the group
    in_channel = widen(group * C_PER_GROUP + offs_n, NUMERICS.index_64)
    first_out_channel = widen(group * K_PER_GROUP, NUMERICS.index_64)
    dy_image = image * stride_dyn + first_out_channel * stride_dyk
    w_col = group_channel * stride_wc

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for tap in range(GEOMETRY.r * S):
        tap_r = tap // S
        tap_s = tap % S
        reach_h = phase_h + GEOMETRY.pad_h - tap_r * GEOMETRY.dil_h  # + i*STRIDE_H for row i of the phase
        reach_w = phase_w + GEOMETRY.pad_w - tap_s * GEOMETRY.dil_w
        if (reach_h % STRIDE_H == 0) & (reach_w % STRIDE_W == 0):
            out_h = reach_h // STRIDE_H + row  # exact divisions, so C- and floor-division agree
            out_w = reach_w // STRIDE_W + col
            pixel_ok = mask_m & (out_h >= 0) & (out_h < P) & (out_w >= 0) & (out_w < Q)
            dy_pixel = dy_image + out_h * stride_dyp + out_w * stride_dyq
            w_tap = tap_r * stride_wr + tap_s * stride_ws
            for k0 in range(0, K_PER_GROUP, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < K_PER_GROUP
                a = tl.load(
                    dy_ptr + dy_pixel[:, None] + (offs_k * stride_dyk)[None, :],
                    mask=pixel_ok[:, None] & mask_k[None, :],
                    other=0.0,
                )
                w_offs = w_col[None, :] + ((first_out_channel + offs_k) * stride_wk + w_tap)[:, None]
                b = tl.load(w_ptr + w_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
                acc = dot_accumulate(acc, a, b, NUMERICS)

    finish_pixel_tile(acc, image, in_h, in_w, in_channel, mask_m, mask_n,
                      bias_ptr, stride_bias, dx_ptr, dx_strides, residual_ptr, r_strides, z_ptr, EPILOGUE)  # fmt: skip
