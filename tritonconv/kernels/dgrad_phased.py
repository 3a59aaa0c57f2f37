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

from .indexing import group_and_tile, output_pixels
from .tile import zero_accumulator


@triton.jit
def _conv2d_dgrad_phased_kernel(
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
    INDEX_64: tl.constexpr,
    ACC_FP64: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """One BLOCK_M (input pixels of one phase) x BLOCK_N (input channels of a group) tile of dX.

    M counts the pixels of a phase over a ceil(H/STRIDE_H) x ceil(W/STRIDE_W) grid per image; rows
    and columns past the input (phases with fewer rows) are masked.
    """
    pid = tl.program_id(0)
    phase = tl.program_id(1)
    phase_h = phase // STRIDE_W
    phase_w = phase % STRIDE_W
    rows = tl.cdiv(H, STRIDE_H)
    cols = tl.cdiv(W, STRIDE_W)
    M = N * rows * cols
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(C_PER_GROUP, BLOCK_N)
    group, pid_m, pid_n = group_and_tile(pid, num_pid_m, num_pid_n, GROUPS, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < C_PER_GROUP
    image, row, col = output_pixels(offs_m, rows, cols, INDEX_64)
    in_h = phase_h + row * STRIDE_H
    in_w = phase_w + col * STRIDE_W
    mask_m = (offs_m < M) & (in_h < H) & (in_w < W)
    group_channel = offs_n  # the weight's dim 1 counts channels within the group
    in_channel = group * C_PER_GROUP + offs_n
    first_out_channel = group * K_PER_GROUP
    if INDEX_64:
        group_channel = group_channel.to(tl.int64)
        in_channel = in_channel.to(tl.int64)
        first_out_channel = first_out_channel.to(tl.int64)
    dy_image = image * stride_dyn + first_out_channel * stride_dyk
    w_col = group_channel * stride_wc

    acc = zero_accumulator(BLOCK_M, BLOCK_N, ACC_FP64)
    for tap in range(R * S):
        tap_r = tap // S
        tap_s = tap % S
        reach_h = phase_h + PAD_H - tap_r * DIL_H  # + i*STRIDE_H for row i of the phase
        reach_w = phase_w + PAD_W - tap_s * DIL_W
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
                if UPCAST_OPERANDS:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)

    dx_row = image * stride_dxn + in_h * stride_dxh + in_w * stride_dxw
    dx_offs = dx_row[:, None] + (in_channel * stride_dxc)[None, :]
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
