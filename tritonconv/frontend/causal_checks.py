"""The argument checks the causal conv1d's entry points share (`causal_conv1d` and its packed form,
the decode step, the packed prefill), each raising with the sizes that broke it in the message."""

from __future__ import annotations

import torch

from ..problem.runtime import check_device

FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
SERVING_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # the serving steps take no fp64


def check_x_and_weight(x: torch.Tensor, weight: torch.Tensor) -> None:
    """x (B, C, L) or (C, L) and a depthwise weight (C, 1, W) (a (C, W) one already unsqueezed)."""
    if x.dim() not in (2, 3) or weight.dim() != 3 or weight.shape[1] != 1 or weight.shape[0] != x.shape[-2]:
        raise RuntimeError(
            "causal_conv1d takes x (B, C, L) or (C, L) and a depthwise weight (C, 1, W) or (C, W); got x of size "
            f"{list(x.shape)} and weight of size {list(weight.shape)}"
        )


def check_floating(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Floating operands (each may have its own dtype: the arithmetic is then fp32)."""
    if any(t is not None and t.dtype not in FLOATING for t in (x, weight, bias)):
        raise RuntimeError(f"causal_conv1d: x, weight and bias must be floating; got {x.dtype}, {weight.dtype}")


def check_weight_and_bias(op: str, weight: torch.Tensor, bias: torch.Tensor | None, channels: int) -> None:
    """A serving step's weight (D, W) and bias (D,), in a serving dtype."""
    if weight.dim() != 2 or weight.shape[0] != channels or weight.dtype not in SERVING_DTYPES:
        raise RuntimeError(f"{op}: weight must be (D, W) or (D, 1, W) with D = {channels}; got {list(weight.shape)} "
                           f"{weight.dtype}")  # fmt: skip
    if bias is not None and (bias.shape != (channels,) or bias.dtype not in SERVING_DTYPES):
        raise RuntimeError(f"{op}: bias must be ({channels},); got {list(bias.shape)} {bias.dtype}")


def check_on_one_device(op: str, kernel: object, *tensors: torch.Tensor | None) -> None:
    """Every tensor on the first one's device, and a device `kernel` runs on (`runtime.check_device`)."""
    device = tensors[0].device
    for tensor in tensors:
        if tensor is not None:
            if tensor.device != device:
                raise RuntimeError(f"{op}: every tensor must be on {device}; got {tensor.device}")
            check_device(tensor, kernel)
