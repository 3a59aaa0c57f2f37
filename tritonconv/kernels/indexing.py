"""Index arithmetic the kernels share, as `@triton.jit` helpers inlined into each kernel."""

import triton
import triton.language as tl


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
def output_pixels(offs_m, P, Q, INDEX_64: tl.constexpr):
    """(image, out_h, out_w) of flattened output-pixel indices m = (image * P + out_h) * Q + out_w,
    widened to 64 bits when addresses need it."""
    image = offs_m // (P * Q)
    pixel = offs_m % (P * Q)
    out_h = pixel // Q
    out_w = pixel % Q
    if INDEX_64:
        image = image.to(tl.int64)
        out_h = out_h.to(tl.int64)
        out_w = out_w.to(tl.int64)
    return image, out_h, out_w


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
