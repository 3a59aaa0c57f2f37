"""The fused activation's backward: dL/dz = dL/dy * activation'(z), one elementwise Triton pass."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import cdiv, is_channels_last_like
from .common import needs_int64
from .epilogue import slope_constant
from .launch import KernelLaunch

BLOCK = 1024


def prepare_activation_grad(
    grad_output: torch.Tensor, saved: torch.Tensor, grad: torch.Tensor, activation: str, negative_slope: float
) -> Callable[..., None]:
    """`run(grad_output, saved, grad)`: `saved` is the output when `epilogue.saves_output`, else
    the pre-activation; `grad` is laid out like `grad_output`. 5-D tensors (a 3-D convolution's)
    run as their (N, K, D*H, W) views (`has_4d_view` must hold for each)."""
    if grad.dim() == 5:
        launch = prepare_activation_grad(*map(as_4d, (grad_output, saved, grad)), activation, negative_slope)
        return lambda grad_output, saved, grad: launch(as_4d(grad_output), as_4d(saved), as_4d(grad))
    _, k, p, q = grad.shape
    return KernelLaunch(
        kernels._activation_grad_kernel,
        (cdiv(grad.numel(), BLOCK),),
        (k, p, q, grad.numel(), *grad_output.stride(), *saved.stride(), *grad.stride()),
        {
            "ACTIVATION": activation,
            "NEGATIVE_SLOPE": slope_constant(activation, negative_slope),
            "CHANNELS_INNER": is_channels_last_like(grad_output),
            "INDEX_64": needs_int64(grad_output, saved, grad) or grad.numel() > 2**31 - 1 - BLOCK,
            "ACC_FP64": grad.dtype == torch.float64,
            "BLOCK": BLOCK,
        },
    )


def has_4d_view(tensor: torch.Tensor) -> bool:
    """Whether a 5-D (N, K, D, H, W) tensor views as (N, K, D*H, W): its depth stride is H times its
    height stride (any dense tensor, NCDHW or channels_last_3d), or one of the two axes is 1. True
    for any 4-D tensor."""
    if tensor.dim() != 5:
        return True
    depth, height = tensor.shape[2:4]
    return depth == 1 or height == 1 or tensor.stride(2) == height * tensor.stride(3)


def as_4d(tensor: torch.Tensor) -> torch.Tensor:
    """The (N, K, D*H, W) view of a 5-D tensor for which `has_4d_view` holds."""
    n, k, depth, height, width = tensor.shape
    rows = tensor.stride(3) if height > 1 else tensor.stride(2)
    return tensor.as_strided(
        (n, k, depth * height, width), (tensor.stride(0), tensor.stride(1), rows, tensor.stride(4))
    )
