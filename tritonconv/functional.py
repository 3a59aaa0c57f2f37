"""Public functional API with `torch.nn.functional` semantics, differentiable through Triton kernels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .arithmetic import ConvProblem, is_channels_last_like, problem_from_tensors
from .ops import conv2d_fwd
from .ops.backward import conv2d_bias_grad, conv2d_dgrad, conv2d_wgrad


class Conv2dFunction(torch.autograd.Function):
    """conv2d with a Triton backward. Thin on purpose: it saves only what the gradients asked for
    need (the weight for dgrad, the input for wgrad, nothing for the bias) and launches only those
    gradients' kernels, so a frozen layer skips wgrad and a first layer skips dgrad."""

    @staticmethod
    def forward(ctx, input, weight, bias, problem: ConvProblem):
        output = conv2d_fwd(input, weight, bias, problem)
        needs_input, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(input if needs_weight else None, weight if needs_input else None)
        ctx.problem = problem
        ctx.input_channels_last = is_channels_last_like(input)
        ctx.weight_channels_last = is_channels_last_like(weight)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        problem = ctx.problem
        grad_input = conv2d_dgrad(grad_output, weight, problem, ctx.input_channels_last) if needs_input else None
        grad_weight = conv2d_wgrad(input, grad_output, problem, ctx.weight_channels_last) if needs_weight else None
        grad_bias = conv2d_bias_grad(grad_output) if needs_bias else None
        return grad_input, grad_weight, grad_bias, None


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """2-D convolution computed by Triton kernels, with exactly `torch.nn.functional.conv2d`'s semantics.

    Accepts batched (N, C, H, W) and unbatched (C, H, W) inputs, NCHW, channels_last or any strided
    view (read in place, never copied), `padding='same'|'valid'`, and fp16, bf16, fp32 (TF32 when
    `torch.backends.cudnn.allow_tf32` is set) and fp64. The output has the memory format torch gives it.
    Differentiable in input, weight and bias; every gradient is computed by Triton kernels. Under
    `torch.autocast` it computes in the autocast dtype, as `F.conv2d` does.
    """
    if _shapes_only:  # recording a model's problems (tuning.model): torch computes, no kernel compiles
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    problem = problem_from_tensors(input, weight, bias, stride, padding, dilation, groups)
    batched = input.dim() == 4
    batched_input = input if batched else input.unsqueeze(0)
    if _needs_grad(input, weight, bias):
        output = Conv2dFunction.apply(batched_input, weight, bias, problem)
    else:  # inference: no autograd node to build, so skip Function.apply's cost on every call
        output = conv2d_fwd(batched_input, weight, bias, problem)
    return output if batched else output.squeeze(0)


def _needs_grad(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    return input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)


_shapes_only = False


@contextlib.contextmanager
def torch_computes() -> Iterator[None]:
    """Within this context `conv2d` hands every call to `F.conv2d`: `tuning.model` records the
    problems a model runs through torch's own conv, where a model already using tritonconv would
    otherwise compile (and, with TRITONCONV_AUTOTUNE=on, tune) mid-recording."""
    global _shapes_only
    previous, _shapes_only = _shapes_only, True
    try:
        yield
    finally:
        _shapes_only = previous


def autocast_dtype_for(input: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would run F.conv2d in on `input`'s device, or None outside autocast."""
    device_type = input.device.type
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Cast as autocast does: floating tensors other than float64 (differentiably)."""
    if tensor is None or not tensor.is_floating_point() or tensor.dtype == torch.float64:
        return tensor
    return tensor.to(dtype)
