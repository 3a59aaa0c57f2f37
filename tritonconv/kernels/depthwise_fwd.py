"""Depthwise convolution (one input channel per group, any channel multiplier) without tl.dot.

Each output is only R*S multiply-adds, so tensor cores have nothing to do and the kernel is about
moving memory: a program computes one output row segment of BLOCK_M pixels for BLOCK_N channels,
vectorised over channels (contiguous in channels_last). Output channel k reads input channel
k // MULTIPLIER.

With HALO_IN_REGISTERS, each kernel row's input row segment, halo included, is loaded once per
program and every tap's window is gathered from registers, so the R input rows a program needs are
read once and reused for all R x S taps. Without it, each tap loads its window directly and the
reuse is left to the L1 cache; which is faster is the autotuner's call.
"""

import triton
import triton.language as tl

from .tile import store_output, zero_accumulator


@triton.jit
def weight_tap(r, s, stride_wr, stride_ws, R: tl.constexpr, S: tl.constexpr, FLIP_TAPS: tl.constexpr):
    """The weight offset of tap (r, s); FLIP_TAPS reads the kernel rotated by 180 degrees, which turns
    this kernel into the input gradient of a stride-1 depthwise convolution without a flipped copy."""
    if FLIP_TAPS:
        offset = (R - 1 - r) * stride_wr + (S - 1 - s) * stride_ws
    else:
        offset = r * stride_wr + s * stride_ws
    return offset


@triton.jit
def _conv2d_fwd_depthwise_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    y_ptr,
    residual_ptr,
    z_ptr,
    N,
    H,
    W,
    P,
    Q,
    K,
    stride_xn,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wk,
    stride_wr,
    stride_ws,
    stride_bias,
    stride_yn,
    stride_yk,
    stride_yp,
    stride_yq,
    stride_rn,
    stride_rk,
    stride_rp,
    stride_rq,
    MULTIPLIER: tl.constexpr,
    R: tl.constexpr,
    S: tl.constexpr,
    STRIDE_H: tl.constexpr,
    STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr,
    PAD_W: tl.constexpr,
    DIL_H: tl.constexpr,
    DIL_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    NEGATIVE_SLOPE: tl.constexpr,
    STORE_PREACTIVATION: tl.constexpr,
    FLIP_TAPS: tl.constexpr,
    HALO_IN_REGISTERS: tl.constexpr,
    HALO_W: tl.constexpr,
    INDEX_64: tl.constexpr,
    ACC_FP64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Output row (image, out_h), columns [q0, q0 + BLOCK_M), channels [k0, k0 + BLOCK_N).
    HALO_W is the power of two >= (BLOCK_M - 1) * STRIDE_W + (S - 1) * DIL_W + 1."""
    pid_row = tl.program_id(0)
    pid_q = tl.program_id(1)
    pid_k = tl.program_id(2)
    image = pid_row // P
    out_h = pid_row % P
    offs_q = pid_q * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_q = offs_q < Q
    mask_k = offs_k < K
    in_channel = offs_k // MULTIPLIER
    first_q = pid_q * BLOCK_M
    if INDEX_64:
        image = image.to(tl.int64)
        out_h = out_h.to(tl.int64)
        in_channel = in_channel.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
        offs_q = offs_q.to(tl.int64)
        first_q = first_q.to(tl.int64)
    x_base = image * stride_xn + in_channel * stride_xc  # [BLOCK_N]
    w_base = offs_k * stride_wk
    in_w0 = first_q * STRIDE_W - PAD_W

    acc = zero_accumulator(BLOCK_M, BLOCK_N, ACC_FP64)
    for r in range(R):
        in_h = out_h * STRIDE_H - PAD_H + r * DIL_H
        if HALO_IN_REGISTERS:
            halo_w = in_w0 + tl.arange(0, HALO_W)
            # The row index as a vector, so every mask is one (the interpreter rejects scalar & vector).
            halo_h = in_h + tl.zeros_like(halo_w)
            halo_ok = (halo_h >= 0) & (halo_h < H) & (halo_w >= 0) & (halo_w < W)
            halo = tl.load(
                x_ptr + x_base[None, :] + (halo_h * stride_xh + halo_w * stride_xw)[:, None],
                mask=halo_ok[:, None] & mask_k[None, :],
                other=0.0,
            ).to(acc.dtype)
            for s in range(S):
                window = tl.arange(0, BLOCK_M) * STRIDE_W + s * DIL_W
                index = tl.broadcast_to(window[:, None], (BLOCK_M, BLOCK_N))
                taps = tl.gather(halo, index, 0)
                w_tap = weight_tap(r, s, stride_wr, stride_ws, R, S, FLIP_TAPS)
                weight = tl.load(w_ptr + w_base + w_tap, mask=mask_k, other=0.0)
                acc += taps * weight.to(acc.dtype)[None, :]
        else:
            for s in range(S):
                in_w = offs_q * STRIDE_W - PAD_W + s * DIL_W
                tap_h = in_h + tl.zeros_like(in_w)
                tap_ok = mask_q & (tap_h >= 0) & (tap_h < H) & (in_w >= 0) & (in_w < W)
                taps = tl.load(
                    x_ptr + x_base[None, :] + (tap_h * stride_xh + in_w * stride_xw)[:, None],
                    mask=tap_ok[:, None] & mask_k[None, :],
                    other=0.0,
                )
                w_tap = weight_tap(r, s, stride_wr, stride_ws, R, S, FLIP_TAPS)
                weight = tl.load(w_ptr + w_base + w_tap, mask=mask_k, other=0.0)
                acc += taps.to(acc.dtype) * weight.to(acc.dtype)[None, :]

    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_k * stride_bias, mask=mask_k, other=0.0)
        acc += bias.to(acc.dtype)[None, :]
    y_offs = image * stride_yn + out_h * stride_yp + (offs_q * stride_yq)[:, None] + (offs_k * stride_yk)[None, :]
    r_offs = image * stride_rn + out_h * stride_rp + (offs_q * stride_rq)[:, None] + (offs_k * stride_rk)[None, :]
    mask_y = mask_q[:, None] & mask_k[None, :]
    store_output(acc, y_ptr, y_offs, mask_y, residual_ptr, r_offs, z_ptr,
                 HAS_RESIDUAL, STORE_PREACTIVATION, ACTIVATION, NEGATIVE_SLOPE)  # fmt: skip
