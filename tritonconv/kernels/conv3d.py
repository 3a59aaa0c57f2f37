"""3-D convolution (video, volumes) as implicit GEMMs: the forward, the input gradient and the
weight gradient's partial sums, each over (depth, height, width) where the 2-D kernels have
(height, width).

- Forward: M = N*OD*P*Q output voxels, N = K/g, the reduction over the flattened (C/g)*T*R*S taps,
  ordered (t, r, s, c) for channels_last_3d (consecutive channels adjacent) and (c, t, r, s) for
  NCDHW. Taps in the padding are masked to zero; nothing is unfolded.
- Input gradient: M = N*D*H*W input voxels, N = C/g, the reduction over (K/g)*T*R*S. Input voxel
  (d, h, w) takes tap (t, r, s) from output voxel ((d + pad - t*dil) / stride, ...) only when each
  division is exact and in range: the other taps are masked (no zero-stuffed dY).
- Weight gradient: M = K/g, N = (C/g)*T*R*S, the reduction over N*OD*P*Q output voxels split into
  chunks whose partial sums `wgrad._sum_splits_kernel` adds in order (bit-for-bit reproducible).
- Depthwise weight gradient (X3D's training): dY times the tap-shifted input, elementwise, summed over
  voxels, BLOCK_N channels of one tap per program, the voxels split; no GEMM tile of one column.
- Depthwise forward (one input channel per group, X3D's channel-wise 3x3x3): T*R*S multiply-adds
  per output, nothing for tensor cores; a program computes BLOCK_M output columns of one output row
  by BLOCK_N channels, vectorised over channels (contiguous in channels_last_3d).

Both forwards and the input gradient end as the 2-D ones do (`common.store_output`, EPILOGUE:
`constexprs.EpilogueFlags`): bias, then a residual, the pre-activation kept for the backward, an
activation, all before the store. A gradient's EPILOGUE is empty; the input gradient's is a 3-D
transposed convolution's fused tail when it serves as that convolution's forward.

Video activations pass 2^31 elements easily: with INDEX_64 the flat voxel indices themselves are
64-bit, not only the address products, so no batch is ever split.
"""

import triton
import triton.language as tl

from .common import dot_accumulate, group_and_tile, row_major_tile, store_output, widen, zero_accumulator


@triton.jit
def _voxels(offs, OD, P, Q):
    """(image, d, h, w) of flattened voxel indices ((image * OD + d) * P + h) * Q + w."""
    image = offs // (OD * P * Q)
    voxel = offs % (OD * P * Q)
    return image, voxel // (P * Q), (voxel // Q) % P, voxel % Q


@triton.jit
def _taps(offs_k, C_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, CHANNELS_INNER: tl.constexpr):
    """(channel, t, r, s) of flattened reduction indices over (C/g)*T*R*S, ordered (t, r, s, c)
    with CHANNELS_INNER, else (c, t, r, s)."""
    TAPS: tl.constexpr = GEOMETRY.t * GEOMETRY.r * GEOMETRY.s
    if CHANNELS_INNER:
        channel = offs_k % C_PER_GROUP
        tap = offs_k // C_PER_GROUP
    else:
        channel = offs_k // TAPS
        tap = offs_k % TAPS
    return channel, tap // (GEOMETRY.r * GEOMETRY.s), (tap // GEOMETRY.s) % GEOMETRY.r, tap % GEOMETRY.s


@triton.jit
def _inside(in_d, in_h, in_w, D, H, W):
    """Where (in_d, in_h, in_w) lies in the D x H x W input, not in its padding."""
    return (in_d >= 0) & (in_d < D) & (in_h >= 0) & (in_h < H) & (in_w >= 0) & (in_w < W)


@triton.jit
def _rows(N, D, H, W, INDEX_64: tl.constexpr):
    """N*D*H*W, computed in 64 bits when it may pass 2^31 (the scalar arguments are 32-bit)."""
    return widen(N, INDEX_64) * D * H * W


@triton.jit
def _tile_ranges(pid_m, pid_n, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INDEX_64: tl.constexpr):
    """`common.tile_ranges` with the row indices in 64 bits when the rows may pass 2^31."""
    offs_m = widen(pid_m, INDEX_64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n, offs_m < M, offs_n < N


@triton.jit
def _conv3d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    N, D, H, W, OD, P, Q, K_PER_GROUP,
    x_strides, w_strides, stride_bias, y_strides, r_strides,
    C_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr, EPILOGUE: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M x BLOCK_N tile of one group's output voxels x output channels (GEOMETRY:
    `constexprs.Geometry3d`)."""
    stride_xn, stride_xc, stride_xd, stride_xh, stride_xw = x_strides
    stride_wk, stride_wc, stride_wt, stride_wr, stride_ws = w_strides
    GEMM_K: tl.constexpr = C_PER_GROUP * GEOMETRY.t * GEOMETRY.r * GEOMETRY.s
    INDEX_64: tl.constexpr = NUMERICS.index_64
    M = _rows(N, OD, P, Q, INDEX_64)
    group, pid_m, pid_n = group_and_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K_PER_GROUP, BLOCK_N),
                                         GROUPS, GROUP_M)  # fmt: skip
    offs_m, offs_n, mask_m, mask_n = _tile_ranges(pid_m, pid_n, M, K_PER_GROUP, BLOCK_M, BLOCK_N, INDEX_64)
    image, out_d, out_h, out_w = _voxels(offs_m, OD, P, Q)
    out_channel = widen(group * K_PER_GROUP + offs_n, INDEX_64)
    first_channel = widen(group * C_PER_GROUP, INDEX_64)
    in_d0 = out_d * GEOMETRY.stride_d - GEOMETRY.pad_d
    in_h0 = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h
    in_w0 = out_w * GEOMETRY.stride_w - GEOMETRY.pad_w
    x_row = image * stride_xn + first_channel * stride_xc

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for k0 in range(0, GEMM_K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GEMM_K
        channel, tap_t, tap_r, tap_s = _taps(offs_k, C_PER_GROUP, GEOMETRY, CHANNELS_INNER)
        channel = widen(channel, INDEX_64)
        in_d = in_d0[:, None] + (tap_t * GEOMETRY.dil_d)[None, :]
        in_h = in_h0[:, None] + (tap_r * GEOMETRY.dil_h)[None, :]
        in_w = in_w0[:, None] + (tap_s * GEOMETRY.dil_w)[None, :]
        in_bounds = _inside(in_d, in_h, in_w, D, H, W)
        x_offs = (x_row[:, None] + (channel * stride_xc)[None, :] + in_d * stride_xd + in_h * stride_xh
                  + in_w * stride_xw)  # fmt: skip
        a = tl.load(x_ptr + x_offs, mask=mask_m[:, None] & mask_k[None, :] & in_bounds, other=0.0)
        w_offs = (out_channel * stride_wk)[None, :] + (
            channel * stride_wc + tap_t * stride_wt + tap_r * stride_wr + tap_s * stride_ws
        )[:, None]
        b = tl.load(w_ptr + w_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    if EPILOGUE.has_bias:
        acc += tl.load(bias_ptr + out_channel * stride_bias, mask=mask_n, other=0.0).to(acc.dtype)[None, :]
    y_offs = _voxel_offsets(image, out_d, out_h, out_w, out_channel, y_strides)
    r_offs = _voxel_offsets(image, out_d, out_h, out_w, out_channel, r_strides)
    store_output(acc, y_ptr, y_offs, mask_m[:, None] & mask_n[None, :], residual_ptr, r_offs, z_ptr, EPILOGUE)


@triton.jit
def _voxel_offsets(image, out_d, out_h, out_w, out_channel, strides):
    """Offsets of output voxels (the rows) by output channels through (n, k, d, h, w) strides."""
    stride_n, stride_k, stride_d, stride_h, stride_w = strides
    return (image * stride_n + out_d * stride_d + out_h * stride_h + out_w * stride_w)[:, None] + (
        out_channel * stride_k
    )[None, :]


@triton.jit
def _conv3d_dgrad_kernel(
    dy_ptr, w_ptr, bias_ptr, dx_ptr, residual_ptr, z_ptr,
    N, D, H, W, OD, P, Q, C_PER_GROUP,
    dy_strides, w_strides, stride_bias, dx_strides, r_strides,
    K_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr, CHANNELS_INNER: tl.constexpr,
    EPILOGUE: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M x BLOCK_N tile of one group's input voxels x input channels of dX. EPILOGUE is
    empty for a gradient; a 3-D transposed convolution's forward (dX is its output) fuses its bias,
    residual and activation there, as the forward does."""
    stride_dyn, stride_dyk, stride_dyd, stride_dyh, stride_dyw = dy_strides
    stride_wk, stride_wc, stride_wt, stride_wr, stride_ws = w_strides
    STRIDE_D: tl.constexpr = GEOMETRY.stride_d
    STRIDE_H: tl.constexpr = GEOMETRY.stride_h
    STRIDE_W: tl.constexpr = GEOMETRY.stride_w
    GEMM_K: tl.constexpr = K_PER_GROUP * GEOMETRY.t * GEOMETRY.r * GEOMETRY.s
    INDEX_64: tl.constexpr = NUMERICS.index_64
    M = _rows(N, D, H, W, INDEX_64)
    group, pid_m, pid_n = group_and_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(C_PER_GROUP, BLOCK_N),
                                         GROUPS, GROUP_M)  # fmt: skip
    offs_m, offs_n, mask_m, mask_n = _tile_ranges(pid_m, pid_n, M, C_PER_GROUP, BLOCK_M, BLOCK_N, INDEX_64)
    image, in_d, in_h, in_w = _voxels(offs_m, D, H, W)
    in_channel = widen(group * C_PER_GROUP + offs_n, INDEX_64)
    channel_in_group = widen(offs_n, INDEX_64)  # the weight's second axis is the channel within its group
    first_out_channel = widen(group * K_PER_GROUP, INDEX_64)
    dy_row = image * stride_dyn + first_out_channel * stride_dyk

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for k0 in range(0, GEMM_K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GEMM_K
        out_channel, tap_t, tap_r, tap_s = _taps(offs_k, K_PER_GROUP, GEOMETRY, CHANNELS_INNER)
        out_channel = widen(out_channel, INDEX_64)
        num_d = in_d[:, None] + GEOMETRY.pad_d - (tap_t * GEOMETRY.dil_d)[None, :]
        num_h = in_h[:, None] + GEOMETRY.pad_h - (tap_r * GEOMETRY.dil_h)[None, :]
        num_w = in_w[:, None] + GEOMETRY.pad_w - (tap_s * GEOMETRY.dil_w)[None, :]
        out_d = num_d // STRIDE_D
        out_h = num_h // STRIDE_H
        out_w = num_w // STRIDE_W
        reached = ((num_d >= 0) & (num_d % STRIDE_D == 0) & (out_d < OD) & (num_h >= 0) & (num_h % STRIDE_H == 0)
                   & (out_h < P) & (num_w >= 0) & (num_w % STRIDE_W == 0) & (out_w < Q))  # fmt: skip
        dy_offs = (dy_row[:, None] + (out_channel * stride_dyk)[None, :] + out_d * stride_dyd + out_h * stride_dyh
                   + out_w * stride_dyw)  # fmt: skip
        a = tl.load(dy_ptr + dy_offs, mask=mask_m[:, None] & mask_k[None, :] & reached, other=0.0)
        w_tap = ((first_out_channel + out_channel) * stride_wk + tap_t * stride_wt + tap_r * stride_wr
                 + tap_s * stride_ws)  # fmt: skip
        b = tl.load(w_ptr + ((channel_in_group * stride_wc)[None, :] + w_tap[:, None]),
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
        acc = dot_accumulate(acc, a, b, NUMERICS)

    if EPILOGUE.has_bias:
        acc += tl.load(bias_ptr + in_channel * stride_bias, mask=mask_n, other=0.0).to(acc.dtype)[None, :]
    dx_offs = _voxel_offsets(image, in_d, in_h, in_w, in_channel, dx_strides)
    r_offs = _voxel_offsets(image, in_d, in_h, in_w, in_channel, r_strides)
    store_output(acc, dx_ptr, dx_offs, mask_m[:, None] & mask_n[None, :], residual_ptr, r_offs, z_ptr, EPILOGUE)


@triton.jit
def _conv3d_wgrad_partial_kernel(
    x_ptr, dy_ptr, out_ptr,
    N, D, H, W, OD, P, Q, K_PER_GROUP, chunk,
    x_strides, dy_strides, out_strides,
    C_PER_GROUP: tl.constexpr, GEOMETRY: tl.constexpr, GROUPS: tl.constexpr, CHANNELS_INNER: tl.constexpr,
    NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Partial dW of one (output channels x (c, t, r, s)) tile over output voxels
    [split * chunk, + chunk), stored through (split, k, c, t, r, s) strides: a workspace, or dW
    itself when there is one split."""
    stride_xn, stride_xc, stride_xd, stride_xh, stride_xw = x_strides
    stride_dyn, stride_dyk, stride_dyd, stride_dyh, stride_dyw = dy_strides
    stride_out_split, stride_out_k, stride_out_c, stride_out_t, stride_out_r, stride_out_s = out_strides
    CTRS: tl.constexpr = C_PER_GROUP * GEOMETRY.t * GEOMETRY.r * GEOMETRY.s
    INDEX_64: tl.constexpr = NUMERICS.index_64
    pid = tl.program_id(0)
    split = tl.program_id(1)
    group, pid_m, pid_n = row_major_tile(pid, tl.cdiv(K_PER_GROUP, BLOCK_M), tl.cdiv(CTRS, BLOCK_N))
    L = _rows(N, OD, P, Q, INDEX_64)
    start = widen(split, INDEX_64) * chunk
    end = tl.minimum(start + chunk, L)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < K_PER_GROUP
    mask_n = offs_n < CTRS
    out_channel = group * K_PER_GROUP + offs_m
    channel, tap_t, tap_r, tap_s = _taps(offs_n, C_PER_GROUP, GEOMETRY, CHANNELS_INNER)
    in_channel = group * C_PER_GROUP + channel
    out_channel = widen(out_channel, INDEX_64)
    in_channel = widen(in_channel, INDEX_64)

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for l0 in range(start, end, BLOCK_K):
        offs_l = l0 + tl.arange(0, BLOCK_K)
        mask_l = offs_l < end
        image, out_d, out_h, out_w = _voxels(offs_l, OD, P, Q)
        dy_offs = (out_channel * stride_dyk)[:, None] + (
            image * stride_dyn + out_d * stride_dyd + out_h * stride_dyh + out_w * stride_dyw
        )[None, :]
        a = tl.load(dy_ptr + dy_offs, mask=mask_m[:, None] & mask_l[None, :], other=0.0)
        in_d = (out_d * GEOMETRY.stride_d - GEOMETRY.pad_d)[:, None] + (tap_t * GEOMETRY.dil_d)[None, :]
        in_h = (out_h * GEOMETRY.stride_h - GEOMETRY.pad_h)[:, None] + (tap_r * GEOMETRY.dil_h)[None, :]
        in_w = (out_w * GEOMETRY.stride_w - GEOMETRY.pad_w)[:, None] + (tap_s * GEOMETRY.dil_w)[None, :]
        in_bounds = _inside(in_d, in_h, in_w, D, H, W)
        x_offs = ((image * stride_xn)[:, None] + (in_channel * stride_xc)[None, :] + in_d * stride_xd
                  + in_h * stride_xh + in_w * stride_xw)  # fmt: skip
        b = tl.load(x_ptr + x_offs, mask=mask_l[:, None] & mask_n[None, :] & in_bounds, other=0.0)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    weight_offs = channel * stride_out_c + tap_t * stride_out_t + tap_r * stride_out_r + tap_s * stride_out_s
    out_offs = split.to(tl.int64) * stride_out_split + (out_channel * stride_out_k)[:, None] + weight_offs[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv3d_fwd_depthwise_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    D, H, W, OD, P, Q, K,
    x_strides, w_strides, stride_bias, y_strides, r_strides,
    MULTIPLIER: tl.constexpr, GEOMETRY: tl.constexpr, EPILOGUE: tl.constexpr, NUMERICS: tl.constexpr,
    FLIP_TAPS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Output row (image, d, h) = program 0, columns BLOCK_M * program 1, channels BLOCK_N *
    program 2; output channel k reads input channel k // MULTIPLIER. The weight strides are
    (k, t, r, s). FLIP_TAPS reads the weight back to front on every axis: the input gradient of a
    stride-1 depthwise convolution is this kernel on dY (`ops/conv3d.prepare_depthwise_dgrad`)."""
    stride_xn, stride_xc, stride_xd, stride_xh, stride_xw = x_strides
    stride_wk, stride_wt, stride_wr, stride_ws = w_strides
    INDEX_64: tl.constexpr = NUMERICS.index_64
    row = tl.program_id(0)
    out_w = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    out_channel = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_w = out_w < Q
    mask_k = out_channel < K
    image = widen(row // (OD * P), INDEX_64)
    out_d = widen((row // P) % OD, INDEX_64)
    out_h = widen(row % P, INDEX_64)
    out_w = widen(out_w, INDEX_64)
    out_channel = widen(out_channel, INDEX_64)
    in_channel = out_channel // MULTIPLIER
    x_base = image * stride_xn + (in_channel * stride_xc)[None, :]
    w_base = out_channel * stride_wk
    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for tap_t in range(GEOMETRY.t):
        in_d = out_d * GEOMETRY.stride_d - GEOMETRY.pad_d + tap_t * GEOMETRY.dil_d
        for tap_r in range(GEOMETRY.r):
            in_h = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h + tap_r * GEOMETRY.dil_h
            row_inside = (in_d >= 0) & (in_d < D) & (in_h >= 0) & (in_h < H)
            for tap_s in range(GEOMETRY.s):
                in_w = tl.where(row_inside, out_w * GEOMETRY.stride_w - GEOMETRY.pad_w + tap_s * GEOMETRY.dil_w, -1)
                inside = mask_w & (in_w >= 0) & (in_w < W)  # in_w is -1 (outside) where the row is
                x_offs = x_base + in_d * stride_xd + in_h * stride_xh + (in_w * stride_xw)[:, None]
                x = tl.load(x_ptr + x_offs, mask=inside[:, None] & mask_k[None, :], other=0.0)
                if FLIP_TAPS:
                    w_offs = (w_base + (GEOMETRY.t - 1 - tap_t) * stride_wt + (GEOMETRY.r - 1 - tap_r) * stride_wr
                              + (GEOMETRY.s - 1 - tap_s) * stride_ws)  # fmt: skip
                else:
                    w_offs = w_base + tap_t * stride_wt + tap_r * stride_wr + tap_s * stride_ws
                w = tl.load(w_ptr + w_offs, mask=mask_k, other=0.0)
                acc += x.to(acc.dtype) * w.to(acc.dtype)[None, :]
    if EPILOGUE.has_bias:
        acc += tl.load(bias_ptr + out_channel * stride_bias, mask=mask_k, other=0.0).to(acc.dtype)[None, :]
    y_offs = _row_offsets(image, out_d, out_h, out_w, out_channel, y_strides)
    r_offs = _row_offsets(image, out_d, out_h, out_w, out_channel, r_strides)
    store_output(acc, y_ptr, y_offs, mask_w[:, None] & mask_k[None, :], residual_ptr, r_offs, z_ptr, EPILOGUE)


@triton.jit
def _row_offsets(image, out_d, out_h, out_w, out_channel, strides):
    """Offsets of one output row's columns by channels through (n, k, d, h, w) strides."""
    stride_n, stride_k, stride_d, stride_h, stride_w = strides
    return (image * stride_n + out_d * stride_d + out_h * stride_h + (out_w * stride_w)[:, None]
            + (out_channel * stride_k)[None, :])  # fmt: skip


@triton.jit
def _conv3d_wgrad_depthwise_kernel(
    x_ptr, dy_ptr, partial_ptr,
    N, D, H, W, OD, P, Q, K, chunk,
    x_strides, dy_strides, out_strides,
    MULTIPLIER: tl.constexpr, GEOMETRY: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Depthwise partial dW[k, 0, t, r, s] over output voxels [split * chunk, + chunk), no tl.dot
    (the 2-D `_conv2d_wgrad_depthwise_kernel` with a depth axis): a program takes BLOCK_N channels
    (contiguous in channels_last_3d) of one tap (grid axis 1), accumulates BLOCK_M voxels x BLOCK_N
    channels of products, and sums the voxel axis once at the end, always in the same order.
    Output channel k reads input channel k // MULTIPLIER; `out_strides` are (split, k, t, r, s)."""
    stride_xn, stride_xc, stride_xd, stride_xh, stride_xw = x_strides
    stride_dyn, stride_dyk, stride_dyd, stride_dyh, stride_dyw = dy_strides
    stride_out_split, stride_out_k, stride_out_t, stride_out_r, stride_out_s = out_strides
    INDEX_64: tl.constexpr = NUMERICS.index_64
    pid_k = tl.program_id(0)
    tap = tl.program_id(1)
    split = tl.program_id(2)
    tap_t = tap // (GEOMETRY.r * GEOMETRY.s)
    tap_r = (tap // GEOMETRY.s) % GEOMETRY.r
    tap_s = tap % GEOMETRY.s
    L = _rows(N, OD, P, Q, INDEX_64)
    start = widen(split, INDEX_64) * chunk
    end = tl.minimum(start + chunk, L)
    offs_k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    in_channel = widen(offs_k // MULTIPLIER, INDEX_64)
    offs_k = widen(offs_k, INDEX_64)
    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for l0 in range(start, end, BLOCK_M):
        offs_l = l0 + tl.arange(0, BLOCK_M)
        image, out_d, out_h, out_w = _voxels(offs_l, OD, P, Q)
        in_d = out_d * GEOMETRY.stride_d - GEOMETRY.pad_d + tap_t * GEOMETRY.dil_d
        in_h = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h + tap_r * GEOMETRY.dil_h
        in_w = out_w * GEOMETRY.stride_w - GEOMETRY.pad_w + tap_s * GEOMETRY.dil_w
        voxel_ok = (offs_l < end) & _inside(in_d, in_h, in_w, D, H, W)
        dy_voxel = image * stride_dyn + out_d * stride_dyd + out_h * stride_dyh + out_w * stride_dyw
        x_voxel = image * stride_xn + in_d * stride_xd + in_h * stride_xh + in_w * stride_xw
        mask = voxel_ok[:, None] & mask_k[None, :]
        dy = tl.load(dy_ptr + dy_voxel[:, None] + (offs_k * stride_dyk)[None, :], mask=mask, other=0.0)
        x = tl.load(x_ptr + x_voxel[:, None] + (in_channel * stride_xc)[None, :], mask=mask, other=0.0)
        acc += dy.to(acc.dtype) * x.to(acc.dtype)
    tap_offset = tap_t * stride_out_t + tap_r * stride_out_r + tap_s * stride_out_s
    part_offs = split.to(tl.int64) * stride_out_split + offs_k * stride_out_k + tap_offset
    tl.store(partial_ptr + part_offs, tl.sum(acc, axis=0).to(partial_ptr.dtype.element_ty), mask=mask_k)
