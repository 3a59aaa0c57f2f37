"""The convolution's one autograd formula, shared by the eager `autograd.Function`s and the
`torch.library` op torch.compile sees: the same saved tensors and the same gradient calls.

Only what the requested gradients need is saved (the weight for dX, the input for dW, nothing for
the bias) and only those gradients are computed, so a frozen layer skips dW and a first layer dX.
Where the gradients come from is the caller's: a prepared call (`prepared.PreparedConv`) eagerly,
the gradient custom ops under torch.compile; both run the same planned kernels.
"""

from __future__ import annotations

from typing import Protocol

import torch


class ConvGradients(Protocol):
    def input_grad(self, grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor: ...

    def weight_grad(self, input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor: ...

    def bias_grad(self, grad_output: torch.Tensor) -> torch.Tensor: ...

    def weight_and_bias_grad(
        self, input: torch.Tensor, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def save_operands(ctx, input: torch.Tensor, weight: torch.Tensor, *extra: torch.Tensor | None) -> None:
    """Save the input only if dW is wanted and the weight only if dX is, then `extra` (what an
    epilogue's backward reads)."""
    needs_input, needs_weight = ctx.needs_input_grad[:2]
    ctx.save_for_backward(input if needs_weight else None, weight if needs_input else None, *extra)


def conv_gradients(ctx, grad_output: torch.Tensor, gradients: ConvGradients) -> tuple:
    """(dX, dW, db) for the gradients autograd asked for, None for the rest; dW and db together
    where both are asked for (a route may compute them from one read of dY)."""
    input, weight = ctx.saved_tensors[:2]
    needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
    grad_input = gradients.input_grad(grad_output, weight) if needs_input else None
    if needs_weight and needs_bias:
        return grad_input, *gradients.weight_and_bias_grad(input, grad_output)
    return (
        grad_input,
        gradients.weight_grad(input, grad_output) if needs_weight else None,
        gradients.bias_grad(grad_output) if needs_bias else None,
    )
