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

from .common import inside, store_output, widen, zero_accumulator


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
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    N, H, W, P, Q, K,
    x_strides, w_strides, stride_bias, y_strides, r_strides,
    MULTIPLIER: tl.constexpr, GEOMETRY: tl.constexpr, EPILOGUE: tl.constexpr,
    FLIP_TAPS: tl.constexpr, HALO_IN_REGISTERS: tl.constexpr, HALO_W: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Output row (image, out_h), columns [q0, q0 + BLOCK_M), channels [k0, k0 + BLOCK_N); the
    weight strides are (k, r, s). HALO_W is the power of two >= (BLOCK_M - 1) * stride_w +
    (S - 1) * dil_w + 1."""
    stride_xn, stride_xc, stride_xh, stride_xw = x_strides
    stride_wk, stride_wr, stride_ws = w_strides
    R: tl.constexpr = GEOMETRY.r
    S: tl.constexpr = GEOMETRY.s
    STRIDE_W: tl.constexpr = GEOMETRY.stride_w
    DIL_W: tl.constexpr = GEOMETRY.dil_w
    pid_row = tl.program_id(0)
    pid_q = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_q = pid_q * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_q = offs_q < Q
    mask_k = offs_k < K
    image = widen(pid_row // P, NUMERICS.index_64)
    out_h = widen(pid_row % P, NUMERICS.index_64)
    in_channel = widen(offs_k // MULTIPLIER, NUMERICS.index_64)
    offs_k = widen(offs_k, NUMERICS.index_64)
    offs_q = widen(offs_q, NUMERICS.index_64)
    first_q = widen(pid_q * BLOCK_M, NUMERICS.index_64)
    x_base = image * stride_xn + in_channel * stride_xc  # [BLOCK_N]
    w_base = offs_k * stride_wk
    in_w0 = first_q * STRIDE_W - GEOMETRY.pad_w

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for r in range(R):
        in_h = out_h * GEOMETRY.stride_h - GEOMETRY.pad_h + r * GEOMETRY.dil_h
        if HALO_IN_REGISTERS:
            halo_w = in_w0 + tl.arange(0, HALO_W)
            # The row index as a vector, so every mask is one (the interpreter rejects scalar & vector).
            halo_h = in_h + tl.zeros_like(halo_w)
            halo = tl.load(
                x_ptr + x_base[None, :] + (halo_h * stride_xh + halo_w * stride_xw)[:, None],
                mask=((halo_h >= 0) & (halo_h < H) & (halo_w >= 0) & (halo_w < W))[:, None] & mask_k[None, :],
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
                in_w = offs_q * STRIDE_W - GEOMETRY.pad_w + s * DIL_W
                tap_h = in_h + tl.zeros_like(in_w)
                taps = tl.load(
                    x_ptr + x_base[None, :] + (tap_h * stride_xh + in_w * stride_xw)[:, None],
                    mask=inside(mask_q, tap_h, in_w, H, W)[:, None] & mask_k[None, :],
                    other=0.0,
                )
                w_tap = weight_tap(r, s, stride_wr, stride_ws, R, S, FLIP_TAPS)
                weight = tl.load(w_ptr + w_base + w_tap, mask=mask_k, other=0.0)
                acc += taps.to(acc.dtype) * weight.to(acc.dtype)[None, :]

    if EPILOGUE.has_bias:
        bias = tl.load(bias_ptr + offs_k * stride_bias, mask=mask_k, other=0.0)
        acc += bias.to(acc.dtype)[None, :]
    stride_yn, stride_yk, stride_yp, stride_yq = y_strides
    stride_rn, stride_rk, stride_rp, stride_rq = r_strides
    y_offs = image * stride_yn + out_h * stride_yp + (offs_q * stride_yq)[:, None] + (offs_k * stride_yk)[None, :]
    r_offs = image * stride_rn + out_h * stride_rp + (offs_q * stride_rq)[:, None] + (offs_k * stride_rk)[None, :]
    store_output(acc, y_ptr, y_offs, mask_q[:, None] & mask_k[None, :], residual_ptr, r_offs, z_ptr, EPILOGUE)
