"""Public functional API with `torch.nn.functional` semantics, differentiable through Triton kernels."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .arithmetic import CONTIGUOUS, ConvProblem, is_channels_last_like, problem_from_tensors
from .ops import conv2d_fwd
from .ops.backward import conv2d_bias_grad, conv2d_dgrad, conv2d_wgrad

# torch's own convolutions, as they were when tritonconv was imported: what tritonconv falls back on
# and records through, even while `tritonconv.patch_torch()` has routed F.conv2d/conv1d to tritonconv.
TORCH_CONV2D = F.conv2d
TORCH_CONV1D = F.conv1d


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
        return TORCH_CONV2D(input, weight, bias, stride, padding, dilation, groups)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    if torch.compiler.is_compiling():  # torch.compile holds the custom op in its graph (library_ops.py)
        from . import library_ops

        return library_ops.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return _conv2d(input, weight, bias, problem_from_tensors(input, weight, bias, stride, padding, dilation, groups))


def _conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, problem: ConvProblem) -> torch.Tensor:
    batched = input.dim() == 4
    batched_input = input if batched else input.unsqueeze(0)
    if _needs_grad(input, weight, bias):
        output = Conv2dFunction.apply(batched_input, weight, bias, problem)
    else:  # inference: no autograd node to build, so skip Function.apply's cost on every call
        output = conv2d_fwd(batched_input, weight, bias, problem)
    return output if batched else output.squeeze(0)


def conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """1-D convolution with `torch.nn.functional.conv1d`'s semantics, computed by the 2-D kernels
    with H = 1: (N, C, L) or unbatched (C, L) inputs, weight (K, C/groups, S), padding int or
    'same'/'valid'. The output is contiguous, as torch's is; gradients flow as in `conv2d`."""
    if _shapes_only:  # recording a model's problems: torch computes
        return TORCH_CONV1D(input, weight, bias, stride, padding, dilation, groups)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    input_2d, weight_2d, geometry = as_conv2d(input, weight, stride, padding, dilation, groups)
    if torch.compiler.is_compiling():
        from . import library_ops

        return library_ops.conv2d(input_2d, weight_2d, bias, *geometry).squeeze(-2)
    problem = problem_from_tensors(input_2d, weight_2d, bias, *geometry)
    return _conv2d(input_2d, weight_2d, bias, dataclasses.replace(problem, layout=CONTIGUOUS)).squeeze(-2)


def as_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """A conv1d call as the conv2d it is with H = 1: the input and weight with a unit height axis
    (views), and (stride, padding, dilation, groups) for the 2-D call. Refuses what `F.conv1d`
    refuses, with its messages."""
    if input.dim() not in (2, 3):
        raise RuntimeError(
            f"Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: {list(input.shape)}"
        )
    if weight.dim() != 3:
        raise RuntimeError(
            f"Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight {list(weight.shape)}, "
            f"but got {input.dim()}-dimensional input of size {list(input.shape)} instead"
        )
    channels = input.shape[-2]
    if groups > 0 and weight.shape[1] * groups != channels:
        batched_shape = list(input.shape) if input.dim() == 3 else [1, *input.shape]
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{batched_shape} "
            f"to have {weight.shape[1] * groups} channels, but got {channels} channels instead"
        )
    padding = padding if isinstance(padding, str) else (0, _single(padding, "padding"))
    geometry = ((1, _single(stride, "stride")), padding, (1, _single(dilation, "dilation")), groups)
    return input.unsqueeze(-2), weight.unsqueeze(-2), geometry


def _single(value: int | Sequence[int], name: str) -> int:
    """conv1d's int or 1-sequence argument as an int."""
    if isinstance(value, Sequence):
        if len(value) != 1:
            raise RuntimeError(
                f"expected {name} to be a single integer value or a list of 1 values to match the "
                f"convolution dimensions, but got {name}={list(value)}"
            )
        (value,) = value
    return value


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
