"""Weight and bias gradients: reductions over every output pixel, split across programs, summed in order.

dW[k, (c,r,s)] = sum_l dY[l, k] * X_im2col[l, (c,r,s)] with l over N*P*Q, a reduction far longer than
the GEMM's other two sides. The l range is split into SPLIT chunks, each chunk's partial product is
written to an fp32 workspace, and a second kernel adds the chunks in index order, so the result is
the same bit for bit on every run (no float atomics), then cast to the weight's dtype.
"""

import triton
import triton.language as tl

from .common import (
    dot_accumulate,
    inside,
    output_pixels,
    reduction_taps,
    row_major_tile,
    tile_ranges,
    widen,
    zero_accumulator,
)


@triton.jit
def _conv2d_wgrad_partial_kernel(
    x_ptr, dy_ptr, partial_ptr,
    N, H, W, P, Q, K_PER_GROUP, chunk,
    x_strides, dy_strides, out_strides,
    C_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr, CHANNELS_INNER: tl.constexpr,
    TAP_MAJOR: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Partial dW of one (output channels x (c,r,s)) tile over output pixels [split*chunk, +chunk).

    Partials are stored through (split, k, c, r, s) strides: a [SPLIT, K, C/g, R, S] fp32 workspace, or,
    with one split, dW itself (its dtype, its layout).

    TAP_MAJOR (BLOCK_N divides C/g): a tile's columns are BLOCK_N consecutive channels of one tap
    (r, s). Then the input tile's rows are pixels shifted by one tap, so its addresses and its
    padding mask are computed per pixel (1-D) instead of per element, which is most of the work of
    the general path's im2col tile.
    """
    stride_xn, stride_xc, stride_xh, stride_xw = x_strides
    stride_dyn, stride_dyk, stride_dyp, stride_dyq = dy_strides
    stride_out_split, stride_out_k, stride_out_c, stride_out_r, stride_out_s = out_strides
    R: tl.constexpr = GEOMETRY.r
    S: tl.constexpr = GEOMETRY.s
    CRS: tl.constexpr = C_PER_GROUP * R * S
    pid = tl.program_id(0)
    split = tl.program_id(1)
    group, pid_m, pid_n = row_major_tile(pid, tl.cdiv(K_PER_GROUP, BLOCK_M), tl.cdiv(CRS, BLOCK_N))
    L = N * P * Q
    start = split * chunk
    end = tl.minimum(start + chunk, L)

    offs_m, offs_n, mask_m, mask_n = tile_ranges(pid_m, pid_n, K_PER_GROUP, CRS, BLOCK_M, BLOCK_N)
    out_channel = group * K_PER_GROUP + offs_m
    if TAP_MAJOR:
        C_BLOCKS: tl.constexpr = C_PER_GROUP // BLOCK_N
        tap = pid_n // C_BLOCKS
        tap_r = tap // S
        tap_s = tap % S
        channel = (pid_n % C_BLOCKS) * BLOCK_N + tl.arange(0, BLOCK_N)
    else:
        channel, tap_r, tap_s = reduction_taps(offs_n, C_PER_GROUP, R, S, CHANNELS_INNER)
    in_channel = group * C_PER_GROUP + channel
    out_channel = widen(out_channel, NUMERICS.index_64)
    in_channel = widen(in_channel, NUMERICS.index_64)

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for l0 in range(start, end, BLOCK_K):
        offs_l = l0 + tl.arange(0, BLOCK_K)
        mask_l = offs_l < end
        image, out_h, out_w = output_pixels(offs_l, P, Q, NUMERICS.index_64)
        dy_offs = (out_channel * stride_dyk)[:, None] + (image * stride_dyn + out_h * stride_dyp + out_w * stride_dyq)[
            None, :
        ]
        a = tl.load(dy_ptr + dy_offs, mask=mask_m[:, None] & mask_l[None, :], other=0.0)
        if TAP_MAJOR:
            in_h = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h + tap_r * GEOMETRY.dil_h
            in_w = out_w * GEOMETRY.stride_w - GEOMETRY.pad_w + tap_s * GEOMETRY.dil_w
            pixel_ok = inside(mask_l, in_h, in_w, H, W)
            x_pixel = image * stride_xn + in_h * stride_xh + in_w * stride_xw
            x_offs = x_pixel[:, None] + (in_channel * stride_xc)[None, :]
            b = tl.load(x_ptr + x_offs, mask=pixel_ok[:, None], other=0.0)
        else:
            in_h = (out_h * GEOMETRY.stride_h - GEOMETRY.pad_h)[:, None] + (tap_r * GEOMETRY.dil_h)[None, :]
            in_w = (out_w * GEOMETRY.stride_w - GEOMETRY.pad_w)[:, None] + (tap_s * GEOMETRY.dil_w)[None, :]
            x_mask = inside(mask_l[:, None] & mask_n[None, :], in_h, in_w, H, W)
            x_offs = (image * stride_xn)[:, None] + (in_channel * stride_xc)[None, :] + in_h * stride_xh
            b = tl.load(x_ptr + x_offs + in_w * stride_xw, mask=x_mask, other=0.0)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    weight_offs = channel * stride_out_c + tap_r * stride_out_r + tap_s * stride_out_s
    part_offs = split.to(tl.int64) * stride_out_split + (out_channel * stride_out_k)[:, None] + weight_offs[None, :]
    tl.store(partial_ptr + part_offs, acc.to(partial_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _sum_splits_kernel(
    partial_ptr, dw_ptr, db_ptr,
    SPLIT, NUMEL, BIAS_NUMEL,
    stride_part_split, w_strides, stride_db,
    C_PER_GROUP: tl.constexpr, R: tl.constexpr, S: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """dW = sum over splits of the workspace, in split order, cast to dW's dtype and layout (its
    strides (k, c, r, s)). A row of the workspace may hold BIAS_NUMEL bias-gradient partials after
    dW's NUMEL: those go to db."""
    stride_wk, stride_wc, stride_wr, stride_ws = w_strides
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL + BIAS_NUMEL
    acc = tl.load(partial_ptr + offs, mask=mask, other=0.0)
    for split in range(1, SPLIT):
        acc += tl.load(partial_ptr + split * stride_part_split + offs, mask=mask, other=0.0)
    k = offs // (C_PER_GROUP * R * S)
    crs = offs % (C_PER_GROUP * R * S)
    c = crs // (R * S)
    r = (crs // S) % R
    s = crs % S
    dw_offs = k * stride_wk + c * stride_wc + r * stride_wr + s * stride_ws
    tl.store(dw_ptr + dw_offs, acc.to(dw_ptr.dtype.element_ty), mask=offs < NUMEL)
    is_bias = mask & (offs >= NUMEL)
    tl.store(db_ptr + (offs - NUMEL) * stride_db, acc.to(db_ptr.dtype.element_ty), mask=is_bias)


@triton.jit
def _conv2d_bias_grad_kernel(
    dy_ptr, db_ptr,
    N, K, P, Q,
    dy_strides, stride_db,
    NUMERICS: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """db[k] = sum over every output pixel of dY[:, k], one program per channel block, fixed order."""
    stride_dyn, stride_dyk, stride_dyp, stride_dyq = dy_strides
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    channel = widen(offs_k, NUMERICS.index_64)
    acc = zero_accumulator(BLOCK_L, BLOCK_K, NUMERICS)
    for l0 in range(0, N * P * Q, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        image, out_h, out_w = output_pixels(offs_l, P, Q, NUMERICS.index_64)
        offs = (image * stride_dyn + out_h * stride_dyp + out_w * stride_dyq)[:, None] + (channel * stride_dyk)[None, :]
        acc += tl.load(dy_ptr + offs, mask=(offs_l < N * P * Q)[:, None] & mask_k[None, :], other=0.0).to(acc.dtype)
    tl.store(db_ptr + offs_k * stride_db, tl.sum(acc, axis=0).to(db_ptr.dtype.element_ty), mask=mask_k)


@triton.jit
def _conv2d_wgrad_depthwise_kernel(
    x_ptr, dy_ptr, partial_ptr,
    N, H, W, P, Q, K, chunk,
    x_strides, dy_strides, out_strides,
    MULTIPLIER: tl.constexpr, GEOMETRY: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Depthwise partial dW[k, 0, r, s] over output pixels [split*chunk, +chunk), no tl.dot.

    Each weight sees one input channel, so its gradient is an elementwise product of dY with the
    input shifted by the tap, summed over pixels: a program takes BLOCK_N channels (contiguous in
    channels_last) of one tap (grid axis 1), accumulates BLOCK_M pixels x BLOCK_N channels of
    products, and sums the pixel axis once at the end, always in the same order.
    """
    stride_xn, stride_xc, stride_xh, stride_xw = x_strides
    stride_dyn, stride_dyk, stride_dyp, stride_dyq = dy_strides
    stride_out_split, stride_out_k, _, stride_out_r, stride_out_s = out_strides  # one channel: c is 0
    pid_k = tl.program_id(0)
    tap = tl.program_id(1)
    split = tl.program_id(2)
    tap_r = tap // GEOMETRY.s
    tap_s = tap % GEOMETRY.s
    L = N * P * Q
    start = split * chunk
    end = tl.minimum(start + chunk, L)
    offs_k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    in_channel = widen(offs_k // MULTIPLIER, NUMERICS.index_64)
    offs_k = widen(offs_k, NUMERICS.index_64)
    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for l0 in range(start, end, BLOCK_M):
        offs_l = l0 + tl.arange(0, BLOCK_M)
        image, out_h, out_w = output_pixels(offs_l, P, Q, NUMERICS.index_64)
        in_h = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h + tap_r * GEOMETRY.dil_h
        in_w = out_w * GEOMETRY.stride_w - GEOMETRY.pad_w + tap_s * GEOMETRY.dil_w
        pixel_ok = inside(offs_l < end, in_h, in_w, H, W)
        dy_pixel = image * stride_dyn + out_h * stride_dyp + out_w * stride_dyq
        x_pixel = image * stride_xn + in_h * stride_xh + in_w * stride_xw
        mask = pixel_ok[:, None] & mask_k[None, :]
        dy = tl.load(dy_ptr + dy_pixel[:, None] + (offs_k * stride_dyk)[None, :], mask=mask, other=0.0)
        x = tl.load(x_ptr + x_pixel[:, None] + (in_channel * stride_xc)[None, :], mask=mask, other=0.0)
        acc += dy.to(acc.dtype) * x.to(acc.dtype)
    part_offs = (
        split.to(tl.int64) * stride_out_split + offs_k * stride_out_k + tap_r * stride_out_r + tap_s * stride_out_s
    )
    tl.store(partial_ptr + part_offs, tl.sum(acc, axis=0).to(partial_ptr.dtype.element_ty), mask=mask_k)
