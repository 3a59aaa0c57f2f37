"""vmap rules of a convolution's passes, shared by the differentiable Functions and the custom ops:
a vmapped input or gradient is more images of one batch (folded into N: one launch over B*N
images), a vmapped weight is more filters, run as one grouped convolution with B times the groups
over the vmapped batch stacked on the channel axis, as torch's own batching rule for convolution
does. Each rule takes `run`, the pass on unbatched tensors with its groups multiplied by a factor,
and returns (output, the output's vmapped dimension)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _stacked(tensor: torch.Tensor, batch_dim: int | None, batch_size: int) -> torch.Tensor:
    """`tensor` with the vmapped axis first, broadcast to it when it has none."""
    if batch_dim is None:
        return tensor.expand(batch_size, *tensor.shape)
    return tensor.movedim(batch_dim, 0)


def _grouped_channels(tensor: torch.Tensor, batch_dim: int | None, batch_size: int) -> torch.Tensor:
    """(B, N, C, ...) as (N, B*C, ...): the vmapped batch as groups of channels."""
    return _stacked(tensor, batch_dim, batch_size).movedim(0, 1).flatten(1, 2)


def forward_rule(
    run: Callable[..., torch.Tensor], batch: int, dims: Sequence[int | None], input: torch.Tensor,
    weight: torch.Tensor, bias: torch.Tensor | None,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """y = conv(x, W) + b; `run(input, weight, bias, groups_factor)`."""
    input_dim, weight_dim, bias_dim = dims
    if weight_dim is None and bias_dim is None:
        output = run(input.movedim(input_dim, 0).flatten(0, 1), weight, bias, 1)
        return output.unflatten(0, (batch, -1)), 0
    weights = _stacked(weight, weight_dim, batch).flatten(0, 1)
    biases = None if bias is None else _stacked(bias, bias_dim, batch).flatten(0, 1)
    output = run(_grouped_channels(input, input_dim, batch), weights, biases, batch)
    return output.unflatten(1, (batch, -1)), 1


def input_grad_rule(
    run: Callable[..., torch.Tensor], batch: int, dims: Sequence[int | None], grad_output: torch.Tensor,
    weight: torch.Tensor, input_shape: Sequence[int],
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """dX = dgrad(dY, W) of an input of `input_shape`; `run(grad_output, weight, input_shape, groups_factor)`."""
    grad_output_dim, weight_dim = dims
    n, c, *spatial = input_shape
    if weight_dim is None:
        grad_input = run(grad_output.movedim(grad_output_dim, 0).flatten(0, 1), weight, [batch * n, c, *spatial], 1)
        return grad_input.unflatten(0, (batch, -1)), 0
    grad_outputs = _grouped_channels(grad_output, grad_output_dim, batch)
    weights = _stacked(weight, weight_dim, batch).flatten(0, 1)
    grad_input = run(grad_outputs, weights, [n, batch * c, *spatial], batch)
    return grad_input.unflatten(1, (batch, -1)), 1


def weight_grad_rule(
    run: Callable[..., torch.Tensor], batch: int, dims: Sequence[int | None], input: torch.Tensor,
    grad_output: torch.Tensor, weight_shape: Sequence[int],
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """dW = wgrad(x, dY) of a weight of `weight_shape`, always grouped (the sum runs over N);
    `run(input, grad_output, weight_shape, groups_factor)`."""
    input_dim, grad_output_dim = dims
    inputs = _grouped_channels(input, input_dim, batch)
    grad_outputs = _grouped_channels(grad_output, grad_output_dim, batch)
    grad_weight = run(inputs, grad_outputs, [batch * weight_shape[0], *weight_shape[1:]], batch)
    return grad_weight.unflatten(0, (batch, -1)), 0


def bias_grad_rule(
    run: Callable[[torch.Tensor], torch.Tensor], batch: int, grad_output_dim: int, grad_output: torch.Tensor
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """db = dY summed over N and the pixels, the vmapped batch as more channels."""
    return run(_grouped_channels(grad_output, grad_output_dim, batch)).unflatten(0, (batch, -1)), 0
