"""Stride-1 convolution fed by tensor descriptors (TMA on Hopper): no per-element address or mask in
the reduction.

The input is a 4-D descriptor over the dense NHWC activations and the weight a 3-D one over its
tap-major [K, R*S, C] view. A program computes a BLOCK_P x BLOCK_Q box of one image's output pixels
(the GEMM's M tile, BLOCK_P * BLOCK_Q rows) by BLOCK_N output channels. The reduction walks the taps
and, within each, BLOCK_K channels: for tap (r, s) the input box [1, BLOCK_P, BLOCK_Q, BLOCK_K] at
(image, p0 + r*DIL_H - PAD_H, q0 + s*DIL_W - PAD_W, c0) is exactly the rows that tap multiplies, and
the descriptor fills coordinates outside the tensor (negative ones included) with zeros, which is
the padding. One scalar division per step finds (tap, c0); nothing is computed per element until
the epilogue, which stores through the output's strides (any layout, the fused tail included).

The input gradient of a stride-1 convolution is the same computation with the roles swapped
(TRANSPOSED): dY is the input (reduction over its K channels), dX the output (C channels), and the
taps run backwards, dX[h] = sum over (r, k) of dY[h + PAD_H - r*DIL_H, k] * W[k, c, r]; the weight
box [BLOCK_K, 1, BLOCK_N] at (k0, tap, c0) is then already the [reduction, output] operand.
"""

import triton
import triton.language as tl

from .common import dot_accumulate, finish_pixel_tile, swizzled_tile, widen, zero_accumulator


@triton.jit
def _conv2d_fwd_tma_kernel(
    x_desc, w_desc, bias_ptr, y_ptr, residual_ptr, z_ptr,
    N, P, Q, K,
    stride_bias, y_strides, r_strides,
    C: tl.constexpr,  # the reduction's channels: the input's (forward) or dY's (TRANSPOSED)
    GEOMETRY: tl.constexpr, TRANSPOSED: tl.constexpr, EPILOGUE: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """One box of BLOCK_P x BLOCK_Q output pixels of one image by BLOCK_N output channels (P, Q and K
    are the output's: dX's H, W and C when TRANSPOSED). GEOMETRY's stride is 1."""
    S: tl.constexpr = GEOMETRY.s
    BLOCK_M: tl.constexpr = BLOCK_P * BLOCK_Q
    CHANNEL_STEPS: tl.constexpr = (C + BLOCK_K - 1) // BLOCK_K
    pid = tl.program_id(0)
    tiles_p = tl.cdiv(P, BLOCK_P)
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    pid_m, pid_n = swizzled_tile(pid, N * tiles_p * tiles_q, tl.cdiv(K, BLOCK_N), GROUP_M)
    image = pid_m // (tiles_p * tiles_q)
    box = pid_m % (tiles_p * tiles_q)
    p0 = (box // tiles_q) * BLOCK_P
    q0 = (box % tiles_q) * BLOCK_Q
    n0 = pid_n * BLOCK_N

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    for step in range(0, GEOMETRY.r * S * CHANNEL_STEPS):
        tap = step // CHANNEL_STEPS
        c0 = (step % CHANNEL_STEPS) * BLOCK_K
        if TRANSPOSED:
            h0 = p0 + GEOMETRY.pad_h - (tap // S) * GEOMETRY.dil_h
            w0 = q0 + GEOMETRY.pad_w - (tap % S) * GEOMETRY.dil_w
            b = w_desc.load([c0, tap, n0]).reshape(BLOCK_K, BLOCK_N)
        else:
            h0 = p0 + (tap // S) * GEOMETRY.dil_h - GEOMETRY.pad_h
            w0 = q0 + (tap % S) * GEOMETRY.dil_w - GEOMETRY.pad_w
            b = w_desc.load([n0, tap, c0]).reshape(BLOCK_N, BLOCK_K).T
        a = x_desc.load([image, h0, w0, c0]).reshape(BLOCK_M, BLOCK_K)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    offs_m = tl.arange(0, BLOCK_M)
    out_h = p0 + offs_m // BLOCK_Q
    out_w = q0 + offs_m % BLOCK_Q
    out_channel = n0 + tl.arange(0, BLOCK_N)
    mask_m = (out_h < P) & (out_w < Q)
    mask_n = out_channel < K
    image = widen(image, NUMERICS.index_64)
    out_h = widen(out_h, NUMERICS.index_64)
    out_channel = widen(out_channel, NUMERICS.index_64)
    finish_pixel_tile(acc, image, out_h, out_w, out_channel, mask_m, mask_n,
                      bias_ptr, stride_bias, y_ptr, y_strides, residual_ptr, r_strides, z_ptr, EPILOGUE)  # fmt: skip
