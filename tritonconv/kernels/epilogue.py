"""Fused epilogue: activations applied to a tile before it is stored, and their derivatives.

ACTIVATION is a constexpr string ('' for none, 'relu', 'silu', 'gelu', 'gelu_tanh', 'leaky_relu'),
so each choice compiles to straight-line code with nothing to branch on at run time. Values are
computed in the accumulator's precision (fp32, or fp64 for fp64 convolutions).
"""

import triton
import triton.language as tl

SQRT_HALF = 0.7071067811865476
SQRT_2_OVER_PI = 0.7978845608028654
GELU_TANH_CUBIC = 0.044715
INV_SQRT_2PI = 0.3989422804014327


@triton.jit
def _sigmoid(x):
    """1 / (1 + exp(-x)) from exp(-|x|), which never overflows."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _tanh(x):
    """tanh(x) = 2 sigmoid(2x) - 1, from exp alone (every Triton and its interpreter have it)."""
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def activate(x, ACTIVATION: tl.constexpr, NEGATIVE_SLOPE: tl.constexpr):
    """ACTIVATION(x), as torch's functional form computes it (gelu exact by erf, gelu_tanh by tanh)."""
    if ACTIVATION == "relu":  # `x < 0` is false for NaN, which passes through as torch's relu lets it
        x = tl.where(x < 0, 0.0, x)
    elif ACTIVATION == "leaky_relu":
        x = tl.where(x < 0, x * NEGATIVE_SLOPE, x)
    elif ACTIVATION == "silu":
        x = x * _sigmoid(x)
    elif ACTIVATION == "gelu":
        x = 0.5 * x * (1.0 + tl.math.erf(x * SQRT_HALF))
    elif ACTIVATION == "gelu_tanh":
        x = 0.5 * x * (1.0 + _tanh(SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)))
    return x


@triton.jit
def activation_derivative(saved, ACTIVATION: tl.constexpr, NEGATIVE_SLOPE: tl.constexpr):
    """d ACTIVATION / dz, from what the forward saved: the output for relu and leaky_relu with a
    slope >= 0 (its sign is then the pre-activation's), the pre-activation z otherwise."""
    if ACTIVATION == "relu":
        derivative = tl.where(saved > 0, 1.0, 0.0)
    elif ACTIVATION == "leaky_relu":
        derivative = tl.where(saved > 0, 1.0, NEGATIVE_SLOPE)
    elif ACTIVATION == "silu":
        sigmoid = _sigmoid(saved)
        derivative = sigmoid * (1.0 + saved * (1.0 - sigmoid))
    elif ACTIVATION == "gelu":
        cdf = 0.5 * (1.0 + tl.math.erf(saved * SQRT_HALF))
        derivative = cdf + saved * INV_SQRT_2PI * tl.exp(-0.5 * saved * saved)
    else:  # gelu_tanh
        inner = SQRT_2_OVER_PI * (saved + GELU_TANH_CUBIC * saved * saved * saved)
        t = _tanh(inner)
        d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * saved * saved)
        derivative = 0.5 * (1.0 + t) + 0.5 * saved * (1.0 - t * t) * d_inner
    return derivative


@triton.jit
def _activation_grad_kernel(
    grad_ptr,
    saved_ptr,
    out_ptr,
    K,
    P,
    Q,
    TOTAL,
    stride_gn,
    stride_gk,
    stride_gp,
    stride_gq,
    stride_sn,
    stride_sk,
    stride_sp,
    stride_sq,
    stride_on,
    stride_ok,
    stride_op,
    stride_oq,
    ACTIVATION: tl.constexpr,
    NEGATIVE_SLOPE: tl.constexpr,
    CHANNELS_INNER: tl.constexpr,
    INDEX_64: tl.constexpr,
    ACC_FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dz = dy * ACTIVATION'(saved), elementwise over (N, K, P, Q) tensors of any strides. The
    element order follows the layout (channels fastest when CHANNELS_INNER) so accesses coalesce."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if INDEX_64:
        offs = offs.to(tl.int64)
    mask = offs < TOTAL
    if CHANNELS_INNER:
        channel = offs % K
        pixel = offs // K
        q = pixel % Q
        p = (pixel // Q) % P
        image = pixel // (Q * P)
    else:
        q = offs % Q
        p = (offs // Q) % P
        channel = (offs // (Q * P)) % K
        image = offs // (Q * P * K)
    grad = tl.load(grad_ptr + image * stride_gn + channel * stride_gk + p * stride_gp + q * stride_gq, mask=mask)
    saved = tl.load(saved_ptr + image * stride_sn + channel * stride_sk + p * stride_sp + q * stride_sq, mask=mask)
    if ACC_FP64:
        grad, saved = grad.to(tl.float64), saved.to(tl.float64)
    else:
        grad, saved = grad.to(tl.float32), saved.to(tl.float32)
    out = grad * activation_derivative(saved, ACTIVATION, NEGATIVE_SLOPE)
    out_offs = image * stride_on + channel * stride_ok + p * stride_op + q * stride_oq
    tl.store(out_ptr + out_offs, out.to(out_ptr.dtype.element_ty), mask=mask)
