"""What every kernel's prologue and tail share, as `@triton.jit` helpers inlined into each kernel:
program id to tile, the tile's indices and masks, 64-bit widening, the reduction step, the store."""

import triton
import triton.language as tl

from .epilogue import activate


@triton.jit
def swizzled_tile(tile, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) for `tile`, walking GROUP_M row-tiles down a column of tiles before moving
    right, so the weight tiles and input rows a wave of programs needs stay in L2."""
    tiles_per_band = GROUP_M * num_pid_n
    first_pid_m = (tile // tiles_per_band) * GROUP_M
    band_height = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile % tiles_per_band) % band_height
    pid_n = (tile % tiles_per_band) // band_height
    return pid_m, pid_n


@triton.jit
def group_and_tile(pid, num_pid_m, num_pid_n, GROUPS: tl.constexpr, GROUP_M: tl.constexpr):
    """(group, pid_m, pid_n) of a program in a grid holding every group's tiles one group after
    another; with GROUPS == 1 the group is zero (a tensor, so every Triton returns one type) and no
    division is emitted."""
    if GROUPS == 1:
        group = pid * 0
        tile = pid
    else:
        tiles_per_group = num_pid_m * num_pid_n
        group = pid // tiles_per_group
        tile = pid % tiles_per_group
    pid_m, pid_n = swizzled_tile(tile, num_pid_m, num_pid_n, GROUP_M)
    return group, pid_m, pid_n


@triton.jit
def row_major_tile(pid, num_pid_m, num_pid_n):
    """(outer, pid_m, pid_n) of a program in a grid of `outer` blocks of num_pid_m x num_pid_n tiles
    in row-major order (the weight-gradient and grouped-tile grids: no swizzle)."""
    return pid // (num_pid_m * num_pid_n), (pid // num_pid_n) % num_pid_m, pid % num_pid_n


@triton.jit
def tile_ranges(pid_m, pid_n, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(offs_m, offs_n, mask_m, mask_n): tile (pid_m, pid_n)'s row and column indices and which of
    them fall inside the M x N matrix."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n, offs_m < M, offs_n < N


@triton.jit
def widen(x, INDEX_64: tl.constexpr):
    """`x` in 64 bits when some tensor's offsets need them (INDEX_64), else as it is."""
    if INDEX_64:
        x = x.to(tl.int64)
    return x


@triton.jit
def output_pixels(offs_m, P, Q, INDEX_64: tl.constexpr):
    """(image, out_h, out_w) of flattened output-pixel indices m = (image * P + out_h) * Q + out_w,
    widened to 64 bits when addresses need it."""
    image = offs_m // (P * Q)
    pixel = offs_m % (P * Q)
    return widen(image, INDEX_64), widen(pixel // Q, INDEX_64), widen(pixel % Q, INDEX_64)


@triton.jit
def reduction_taps(offs_k, C_PER_GROUP: tl.constexpr, R: tl.constexpr, S: tl.constexpr, CHANNELS_INNER: tl.constexpr):
    """(channel, tap_r, tap_s) of flattened reduction indices over one group's (C/g)*R*S taps.

    CHANNELS_INNER orders them (r, s, c), so consecutive indices are consecutive channels, adjacent
    in memory for channels_last; otherwise (c, r, s), adjacent for NCHW.
    """
    if CHANNELS_INNER:
        channel = offs_k % C_PER_GROUP
        tap = offs_k // C_PER_GROUP
    else:
        channel = offs_k // (R * S)
        tap = offs_k % (R * S)
    return channel, tap // S, tap % S


@triton.jit
def inside(mask, in_h, in_w, H, W):
    """`mask` where (in_h, in_w) lies in the H x W input, not in its padding."""
    return mask & (in_h >= 0) & (in_h < H) & (in_w >= 0) & (in_w < W)


@triton.jit
def zero_accumulator(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUMERICS: tl.constexpr):
    """A BLOCK_M x BLOCK_N accumulator of zeros: fp64 for fp64 convolutions, fp32 for the rest."""
    if NUMERICS.acc_fp64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    return acc


@triton.jit
def dot_accumulate(acc, a, b, NUMERICS: tl.constexpr):
    """acc + a @ b in the accumulator's dtype at the call's dot precision (bf16 tiles upcast first
    where NUMERICS says so)."""
    DOT_PRECISION: tl.constexpr = NUMERICS.dot_precision  # a group's field is no constexpr on Triton 3.6
    if NUMERICS.upcast_operands:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def activate_as(acc, EPILOGUE: tl.constexpr):
    """`epilogue.activate` with the EPILOGUE group's activation and slope, bound to constexprs first:
    Triton 3.6 passes a group's field on to a function as a plain value, which it cannot take."""
    ACTIVATION: tl.constexpr = EPILOGUE.activation
    NEGATIVE_SLOPE: tl.constexpr = EPILOGUE.negative_slope
    return activate(acc, ACTIVATION, NEGATIVE_SLOPE)


@triton.jit
def finish_pixel_tile(
    acc, image, out_h, out_w, out_channel, mask_m, mask_n,
    bias_ptr, stride_bias, y_ptr, y_strides, residual_ptr, r_strides, z_ptr, EPILOGUE: tl.constexpr,
):  # fmt: skip
    """The 2-D forward kernels' tail for a tile of output pixels (image, out_h, out_w: the rows) by
    output channels: add the bias, then `store_output` through the output's and the residual's
    (n, k, p, q) strides."""
    if EPILOGUE.has_bias:
        bias = tl.load(bias_ptr + out_channel * stride_bias, mask=mask_n, other=0.0)
        acc += bias.to(acc.dtype)[None, :]
    stride_yn, stride_yk, stride_yp, stride_yq = y_strides
    stride_rn, stride_rk, stride_rp, stride_rq = r_strides
    y_offs = (image * stride_yn + out_h * stride_yp + out_w * stride_yq)[:, None] + (out_channel * stride_yk)[None, :]
    r_offs = (image * stride_rn + out_h * stride_rp + out_w * stride_rq)[:, None] + (out_channel * stride_rk)[None, :]
    store_output(acc, y_ptr, y_offs, mask_m[:, None] & mask_n[None, :], residual_ptr, r_offs, z_ptr, EPILOGUE)


@triton.jit
def store_output(acc, y_ptr, y_offs, mask, residual_ptr, r_offs, z_ptr, EPILOGUE: tl.constexpr):
    """The forward kernels' tail once the bias is in: add the residual, keep the pre-activation
    (at the output's offsets) when the backward needs it, apply the activation, store. Offsets and
    masks are any shape that matches `acc`."""
    if EPILOGUE.has_residual:
        acc += tl.load(residual_ptr + r_offs, mask=mask, other=0.0).to(acc.dtype)
    if EPILOGUE.store_preactivation:
        tl.store(z_ptr + y_offs, acc.to(z_ptr.dtype.element_ty), mask=mask)
    acc = activate_as(acc, EPILOGUE)
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def bias_then_silu(acc, bias_ptr, offs_c, stride_bias, mask_c, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    """A causal conv1d kernel's tail on its (positions, channels) accumulator: + bias[c], then SiLU,
    in the accumulator's dtype."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c * stride_bias, mask=mask_c, other=0.0).to(acc.dtype)[None, :]
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    return acc


@triton.jit
def cache_line(index, indices_ptr, mask_c, N, HAS_INDICES: tl.constexpr):
    """(line, live) of a state cache of N lines for batch row or sequence `index`: the line is
    `indices[index]` (`index` itself without indices), clamped to 0 for addressing; `live` is the
    per-channel mask of channels whose line is inside the cache (a negative index is a padded entry).
    The test is made on a vector: a scalar condition in a mask breaks the interpreter's masked loads."""
    line = index
    if HAS_INDICES:
        line = tl.load(indices_ptr + index).to(tl.int64)
    line_c = line + tl.zeros(mask_c.shape, dtype=tl.int64)
    live = mask_c & (line_c >= 0) & (line_c < N)
    return tl.maximum(line, 0), line_c, live
