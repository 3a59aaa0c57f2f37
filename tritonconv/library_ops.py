"""tritonconv's convolution as `torch.library` custom ops, so `torch.compile` can hold it in a graph.

Dynamo cannot trace the launchers (caches, plans, files); a custom op is opaque to it instead: the
graph records a call to `tritonconv::conv2d`, its fake implementation gives the output's shape,
dtype and memory format, and its registered autograd formula calls the gradient ops. Eager calls do
not come here (`functional.conv2d` takes the direct path, which costs less host time per call);
only calls made while torch.compile traces do.

Padding is passed as four integers (top, left, bottom, right), since 'same' with an even dilated
kernel pads one more element at the end.
"""

import dataclasses
from collections.abc import Sequence
from typing import Optional

import torch

from .arithmetic import ConvProblem, is_channels_last_like, problem_from_tensors, resolve_padding, to_pair
from .ops.backward import conv2d_bias_grad, conv2d_dgrad, conv2d_wgrad
from .ops.forward import conv2d_fwd


def _problem(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> ConvProblem:
    problem = problem_from_tensors(input, weight, bias, tuple(stride), tuple(padding[:2]), tuple(dilation), groups)
    if tuple(padding[2:]) != problem.padding_end:
        problem = dataclasses.replace(problem, padding_end=(padding[2], padding[3]))
    return problem


def _empty(shape: Sequence[int], like: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if is_channels_last_like(tensor) else torch.contiguous_format


@torch.library.custom_op("tritonconv::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045 (torch.library's schema inference reads Optional on every torch)
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """Forward of a batched (N, C, H, W) input."""
    return conv2d_fwd(input, weight, bias, _problem(input, weight, bias, stride, padding, dilation, groups))


@conv2d_op.register_fake
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    problem = _problem(input, weight, bias, stride, padding, dilation, groups)
    return _empty(problem.output_shape, input, problem.memory_format)


@torch.library.custom_op("tritonconv::conv2d_input_grad", mutates_args=())
def conv2d_input_grad_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """dX; `input` gives only its shape and memory format (it is saved for dW anyway)."""
    problem = _problem(input, weight, None, stride, padding, dilation, groups)
    return conv2d_dgrad(grad_output, weight, problem, is_channels_last_like(input))


@conv2d_input_grad_op.register_fake
def _input_grad_fake(grad_output, input, weight, stride, padding, dilation, groups):
    return _empty(input.shape, input, _memory_format(input))


@torch.library.custom_op("tritonconv::conv2d_weight_grad", mutates_args=())
def conv2d_weight_grad_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """dW; `weight` gives only its shape and memory format."""
    problem = _problem(input, weight, None, stride, padding, dilation, groups)
    return conv2d_wgrad(input, grad_output, problem, is_channels_last_like(weight))


@conv2d_weight_grad_op.register_fake
def _weight_grad_fake(grad_output, input, weight, stride, padding, dilation, groups):
    return _empty(weight.shape, weight, _memory_format(weight))


@torch.library.custom_op("tritonconv::conv2d_bias_grad", mutates_args=())
def conv2d_bias_grad_op(grad_output: torch.Tensor) -> torch.Tensor:
    return conv2d_bias_grad(grad_output)


@conv2d_bias_grad_op.register_fake
def _bias_grad_fake(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


def _setup_context(ctx, inputs, output) -> None:
    input, weight, _, *geometry = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = geometry


def _backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
    grad_input = conv2d_input_grad_op(grad_output, input, weight, *ctx.geometry) if needs_input else None
    grad_weight = conv2d_weight_grad_op(grad_output, input, weight, *ctx.geometry) if needs_weight else None
    grad_bias = conv2d_bias_grad_op(grad_output) if needs_bias else None
    return grad_input, grad_weight, grad_bias, None, None, None, None


conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> torch.Tensor:
    """`F.conv2d`'s arguments, normalized to the op's, for a 3- or 4-D input."""
    if input.dim() not in (3, 4) or weight.dim() != 4:
        problem_from_tensors(input, weight, bias, stride, padding, dilation, groups)  # raises torch's error
    stride_hw, dilation_hw = to_pair(stride, "stride"), to_pair(dilation, "dilation")
    begin, end = resolve_padding(padding, (weight.shape[2], weight.shape[3]), stride_hw, dilation_hw)
    geometry = (list(stride_hw), [*begin, *end], list(dilation_hw), groups)
    if input.dim() == 3:
        return conv2d_op(input.unsqueeze(0), weight, bias, *geometry).squeeze(0)
    return conv2d_op(input, weight, bias, *geometry)
