"""The fused activation's backward: dL/dz = dL/dy * activation'(z), one elementwise Triton pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton

from ..kernels import _activation_grad_kernel
from ..problem.arithmetic import is_channels_last_like
from .common import needs_int64
from .epilogue import slope_constant
from .launch import KernelLaunch

BLOCK = 1024


def prepare_activation_grad(
    grad_output: torch.Tensor, saved: torch.Tensor, grad: torch.Tensor, activation: str, negative_slope: float
) -> Callable[..., None]:
    """`run(grad_output, saved, grad)`: `saved` is the output when `epilogue.saves_output`, else
    the pre-activation; `grad` is laid out like `grad_output`."""
    _, k, p, q = grad.shape
    return KernelLaunch(
        _activation_grad_kernel,
        (triton.cdiv(grad.numel(), BLOCK),),
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
