"""Stride-1 weight gradient fed by tensor descriptors (TMA on Hopper), organised as CUTLASS's SM90
wgrad is: GEMM M over K (dY's channels), GEMM N over a block of C at one fixed tap (r, s), and the
reduction over output pixels, taken as BLOCK_P x BLOCK_Q boxes of one image.

dY is a 4-D descriptor over its dense NHWC layout, read in place: the box [1, BLOCK_P, BLOCK_Q,
BLOCK_M] at (image, p0, q0, k0), transposed, is the A operand. X is a 4-D descriptor too, and for
tap (r, s) the box at (image, p0 + r*DIL_H - PAD_H, q0 + s*DIL_W - PAD_W, c0) is exactly the input
those output pixels read through that tap; the descriptor fills coordinates outside the tensor
(negative included) with zeros, which is the padding, and dY's rows past P or Q are zeros too, so
the reduction computes nothing per element. The boxes are split into chunks (grid axis 1); each
chunk's partial dW goes to its own slice of a workspace that a second kernel adds in index order
(bit-for-bit reproducible), or, with one chunk, straight to dW through its strides.

With HAS_BIAS the bias gradient rides along: the programs of the first tap and first C block
already hold every dY box of their K rows, so they also sum those boxes over pixels (in fp32, in
box order) and store db, or its chunk's partial next to dW's in the workspace, which the same
ordered sum finishes. dY is then read once for both gradients, and no third kernel runs.
"""

import triton
import triton.language as tl

from .common import dot_accumulate, zero_accumulator


@triton.jit
def _conv2d_wgrad_tma_kernel(
    x_desc, dy_desc, out_ptr, bias_ptr,
    P, Q, BOXES, CHUNK,
    out_strides, bias_offset, stride_bias_split, stride_bias,
    K: tl.constexpr, C: tl.constexpr, GEOMETRY: tl.constexpr, HAS_BIAS: tl.constexpr, NUMERICS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """dW[k0:k0+BLOCK_M, c0:c0+BLOCK_N, r, s] summed over boxes [chunk*CHUNK, +CHUNK) of BOXES (and,
    with HAS_BIAS, db[k0:k0+BLOCK_M] by the programs of tap 0 and C block 0). `out_strides` are
    (split, k, c, r, s); GEOMETRY's stride is 1."""
    stride_out_split, stride_out_k, stride_out_c, stride_out_r, stride_out_s = out_strides
    S: tl.constexpr = GEOMETRY.s
    PIXELS: tl.constexpr = BLOCK_P * BLOCK_Q
    TILES_C: tl.constexpr = (C + BLOCK_N - 1) // BLOCK_N
    pid = tl.program_id(0)
    chunk = tl.program_id(1)
    tile_c = pid % TILES_C
    tap = (pid // TILES_C) % (GEOMETRY.r * S)
    tile_k = pid // (TILES_C * GEOMETRY.r * S)
    k0 = tile_k * BLOCK_M
    c0 = tile_c * BLOCK_N
    shift_h = (tap // S) * GEOMETRY.dil_h - GEOMETRY.pad_h
    shift_w = (tap % S) * GEOMETRY.dil_w - GEOMETRY.pad_w
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    boxes_per_image = tl.cdiv(P, BLOCK_P) * tiles_q

    acc = zero_accumulator(BLOCK_M, BLOCK_N, NUMERICS)
    sums_bias = (tap == 0) & (tile_c == 0)
    bias_acc = tl.zeros([BLOCK_M], dtype=acc.dtype)
    first = chunk * CHUNK
    for box in range(first, tl.minimum(first + CHUNK, BOXES)):
        image = box // boxes_per_image
        p0 = ((box % boxes_per_image) // tiles_q) * BLOCK_P
        q0 = (box % tiles_q) * BLOCK_Q
        a = dy_desc.load([image, p0, q0, k0]).reshape(PIXELS, BLOCK_M).T
        b = x_desc.load([image, p0 + shift_h, q0 + shift_w, c0]).reshape(PIXELS, BLOCK_N)
        if HAS_BIAS:  # noqa: SIM102 - the constexpr test alone removes the branch at compile time
            if sums_bias:
                bias_acc += tl.sum(a.to(acc.dtype), axis=1)
        acc = dot_accumulate(acc, a, b, NUMERICS)

    offs_k = k0 + tl.arange(0, BLOCK_M)
    offs_c = c0 + tl.arange(0, BLOCK_N)
    offs = (chunk * stride_out_split + (tap // S) * stride_out_r + (tap % S) * stride_out_s
            + (offs_k * stride_out_k)[:, None] + (offs_c * stride_out_c)[None, :])  # fmt: skip
    mask = (offs_k < K)[:, None] & (offs_c < C)[None, :]
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    if HAS_BIAS:  # noqa: SIM102 - the constexpr test alone removes the branch at compile time
        if sums_bias:
            bias_offs = bias_offset + chunk * stride_bias_split + offs_k * stride_bias
            tl.store(bias_ptr + bias_offs, bias_acc.to(bias_ptr.dtype.element_ty), mask=offs_k < K)
