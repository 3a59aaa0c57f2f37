"""The convolution and its gradients as autograd Functions that compose with every way torch
differentiates or batches: backward to any order, forward-mode AD (`torch.autograd.forward_ad`,
`torch.func.jvp`, `jacfwd`, gradcheck's `check_forward_ad`) and `torch.func.vmap` (per-sample
gradients, `jacrev`, batched-grad gradcheck).

Four primitives, each a Triton pass: the forward, the input gradient (dX = dgrad(dY, W)), the
weight gradient (dW = wgrad(x, dY)) and the bias gradient. The first three are bilinear, so every
derivative of each is made of the others with the operands' roles swapped:

- forward y = conv(x, W) + b:   tangent conv(dx, W) + conv(x, dW) + db; backward dgrad, wgrad, sum;
- dX = dgrad(dY, W):           tangent dgrad(d(dY), W) + dgrad(dY, dW); backward conv(g, W), wgrad(g, dY);
- dW = wgrad(x, dY):           tangent wgrad(dx, dY) + wgrad(x, d(dY)); backward dgrad(dY, g), conv(x, g);

and a dual tensor never reaches a kernel without its tangent: the tangent goes through the same
kernels. Each primitive has a vmap rule: a vmapped input or gradient folds into the batch axis
(one launch over B*N images), a vmapped weight turns the call into a grouped convolution over the
vmapped batch (B*groups groups), as torch's own batching rule for convolution does.

The Functions see 4-D or 5-D tensors (1-D convolutions as 2-D ones with H = 1) and plan each call
by its key, as the direct path does (`prepared.py`). They are slower to enter than the eager
`Conv2dFunction`'s prepared call, so the front ends take them only while a transform is active
(`transforms_active`), and the eager backward takes them (`Gradients`) when its own gradients must
be differentiable or batched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as forward_ad

from ..plan.direct import Geometry, bias_grad_of, forward_of, input_grad_of, spread_bias_grad, weight_grad_of
from ..problem import vmap_rules
from ..problem.arithmetic import ConvProblem, is_channels_last_like, memory_format_of
from . import library_ops
from .autograd import ConvGradients

_functorch_active = torch._C._are_functorch_transforms_active
_forward_grad_enabled = getattr(torch._C, "_is_fwd_grad_enabled", lambda: True)


_is_legacy_batched = torch._C._functorch.is_legacy_batchedtensor


def transforms_active() -> bool:
    """True inside a `torch.func` transform or a forward-AD dual level: then the front ends run the
    Functions here, whose tangents, vmap rules and gradients the transform needs."""
    return _functorch_active() or (forward_ad._current_level >= 0 and _forward_grad_enabled())


def _bilinear_tangent(
    pass_: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], first: torch.Tensor, second: torch.Tensor,
    first_tangent: torch.Tensor | None, second_tangent: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """The tangent of a bilinear pass f(a, b): f(da, b) + f(a, db), each term through the pass's own
    kernels; a missing tangent is zero."""
    if first_tangent is None and second_tangent is None:
        return pass_(torch.zeros_like(first), second)
    if second_tangent is None:
        return pass_(first_tangent, second)
    if first_tangent is None:
        return pass_(first, second_tangent)
    return pass_(first_tangent, second) + pass_(first, second_tangent)


class ConvForward(torch.autograd.Function):
    """y = conv(x, W) + b."""

    @staticmethod
    def forward(input, weight, bias, geometry: Geometry):
        return forward_of(input, weight, bias, geometry)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, _, geometry = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
        ctx.gradients = Gradients(geometry, tuple(input.shape), is_channels_last_like(input), tuple(weight.shape),
                                  is_channels_last_like(weight))  # fmt: skip

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        gradients = ctx.gradients.for_operands(grad_output)
        needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        return (
            gradients.input_grad(grad_output, weight) if needs_input else None,
            gradients.weight_grad(input, grad_output) if needs_weight else None,
            gradients.bias_grad(grad_output) if needs_bias else None,
            None,
        )

    @staticmethod
    def jvp(ctx, input_tangent, weight_tangent, bias_tangent, _):
        input, weight = ctx.saved_tensors
        gradients = ctx.gradients.for_operands(input_tangent, weight_tangent)
        tangent = _bilinear_tangent(gradients.forward, input, weight, input_tangent, weight_tangent)
        if bias_tangent is None:
            return tangent
        return tangent + bias_tangent.view(1, -1, *[1] * (input.dim() - 2))

    @staticmethod
    def vmap(info, in_dims, input, weight, bias, geometry: Geometry):
        def run(input, weight, bias, factor):
            return ConvForward.apply(input, weight, bias, geometry.grouped(factor))

        return vmap_rules.forward_rule(run, info.batch_size, in_dims[:3], input, weight, bias)


class InputGrad(torch.autograd.Function):
    """dX = dgrad(dY, W), for an input of `input_shape` laid out channels_last when asked."""

    @staticmethod
    def forward(grad_output, weight, geometry: Geometry, input_shape: tuple, input_channels_last: bool):
        return input_grad_of(grad_output, weight, geometry, input_shape, input_channels_last)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, weight, geometry, input_shape, input_channels_last = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.save_for_forward(grad_output, weight)
        ctx.gradients = Gradients(geometry, tuple(input_shape), input_channels_last, tuple(weight.shape),
                                  is_channels_last_like(weight))  # fmt: skip

    @staticmethod
    def backward(ctx, grad):
        grad_output, weight = ctx.saved_tensors
        gradients = ctx.gradients.for_operands(grad)
        needs_grad_output, needs_weight = ctx.needs_input_grad[:2]
        return (
            gradients.forward(grad, weight) if needs_grad_output else None,
            gradients.weight_grad(grad, grad_output) if needs_weight else None,
            None,
            None,
            None,
        )

    @staticmethod
    def jvp(ctx, grad_output_tangent, weight_tangent, *_):
        grad_output, weight = ctx.saved_tensors
        gradients = ctx.gradients.for_operands(grad_output_tangent, weight_tangent)
        return _bilinear_tangent(gradients.input_grad, grad_output, weight, grad_output_tangent, weight_tangent)

    @staticmethod
    def vmap(info, in_dims, grad_output, weight, geometry: Geometry, input_shape: tuple, input_channels_last: bool):
        def run(grad_output, weight, shape, factor):
            return InputGrad.apply(grad_output, weight, geometry.grouped(factor), tuple(shape), input_channels_last)

        return vmap_rules.input_grad_rule(run, info.batch_size, in_dims[:2], grad_output, weight, input_shape)


class WeightGrad(torch.autograd.Function):
    """dW = wgrad(x, dY), for a weight of `weight_shape` laid out channels_last when asked."""

    @staticmethod
    def forward(input, grad_output, geometry: Geometry, weight_shape: tuple, weight_channels_last: bool):
        return weight_grad_of(input, grad_output, geometry, weight_shape, weight_channels_last)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, grad_output, geometry, weight_shape, weight_channels_last = inputs
        ctx.save_for_backward(input, grad_output)
        ctx.save_for_forward(input, grad_output)
        ctx.gradients = Gradients(geometry, tuple(input.shape), is_channels_last_like(input), tuple(weight_shape),
                                  weight_channels_last)  # fmt: skip

    @staticmethod
    def backward(ctx, grad):
        input, grad_output = ctx.saved_tensors
        gradients = ctx.gradients.for_operands(grad)
        needs_input, needs_grad_output = ctx.needs_input_grad[:2]
        return (
            gradients.input_grad(grad_output, grad) if needs_input else None,
            gradients.forward(input, grad) if needs_grad_output else None,
            None,
            None,
            None,
        )

    @staticmethod
    def jvp(ctx, input_tangent, grad_output_tangent, *_):
        input, grad_output = ctx.saved_tensors
        gradients = ctx.gradients.for_operands(input_tangent, grad_output_tangent)
        return _bilinear_tangent(gradients.weight_grad, input, grad_output, input_tangent, grad_output_tangent)

    @staticmethod
    def vmap(info, in_dims, input, grad_output, geometry: Geometry, weight_shape: tuple, weight_channels_last: bool):
        def run(input, grad_output, shape, factor):
            return WeightGrad.apply(input, grad_output, geometry.grouped(factor), tuple(shape), weight_channels_last)

        return vmap_rules.weight_grad_rule(run, info.batch_size, in_dims[:2], input, grad_output, weight_shape)


class BiasGrad(torch.autograd.Function):
    """db = dY summed over the batch and the spatial axes."""

    @staticmethod
    def forward(grad_output):
        return bias_grad_of(grad_output)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (grad_output,) = inputs
        ctx.shape = grad_output.shape
        ctx.memory_format = memory_format_of(grad_output.dim(), is_channels_last_like(grad_output))

    @staticmethod
    def backward(ctx, grad):
        return spread_bias_grad(grad, ctx.shape, ctx.memory_format)

    @staticmethod
    def jvp(ctx, grad_output_tangent):
        if _is_legacy_batched(grad_output_tangent):
            return library_ops.conv2d_bias_grad_op(grad_output_tangent)
        return BiasGrad.apply(grad_output_tangent)

    @staticmethod
    def vmap(info, in_dims, grad_output):
        return vmap_rules.bias_grad_rule(BiasGrad.apply, info.batch_size, in_dims[0], grad_output)


@dataclasses.dataclass(frozen=True)
class Gradients:
    """A convolution's gradients (and its forward, which its gradients' derivatives need) through
    the Functions above (`autograd.ConvGradients`): what an eager backward uses when its gradients
    must themselves be differentiable (`create_graph=True`), carry tangents or be vmapped."""

    geometry: Geometry
    input_shape: tuple[int, ...]
    input_channels_last: bool
    weight_shape: tuple[int, ...]
    weight_channels_last: bool

    @classmethod
    def of(cls, problem: ConvProblem, input_channels_last: bool, weight_channels_last: bool) -> Gradients:
        """The gradients of `problem`'s convolution (an eager call's)."""
        return cls(Geometry.of_problem(problem), problem.input_shape, input_channels_last, problem.weight_shape,
                   weight_channels_last)  # fmt: skip

    def for_operands(self, *operands: torch.Tensor | None) -> ConvGradients:
        """These gradients, or the same as custom ops (`library_ops.OpGradients`) when an operand is
        batched by torch's legacy vmap (gradcheck's batched checks), which knows no Function's vmap
        rule but runs an op one sample at a time."""
        if not any(operand is not None and _is_legacy_batched(operand) for operand in operands):
            return self
        problem = self.geometry.problem(self.input_shape, self.weight_shape, torch.float32, "contiguous")
        return library_ops.OpGradients.of(problem, self.input_channels_last, self.weight_channels_last)

    def input_grad(self, grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return InputGrad.apply(grad_output, weight, self.geometry, self.input_shape, self.input_channels_last)

    def weight_grad(self, input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        return WeightGrad.apply(input, grad_output, self.geometry, self.weight_shape, self.weight_channels_last)

    def bias_grad(self, grad_output: torch.Tensor) -> torch.Tensor:
        return BiasGrad.apply(grad_output)

    def weight_and_bias_grad(self, input: torch.Tensor, grad_output: torch.Tensor) -> tuple:
        return self.weight_grad(input, grad_output), self.bias_grad(grad_output)

    def forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return ConvForward.apply(input, weight, bias, self.geometry)


def convolution(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: Geometry
) -> torch.Tensor:
    """The forward of a call whose arguments torch accepts (the front end has checked them), for a
    batched or unbatched input, through `ConvForward`."""
    batched = input.dim() == weight.dim()
    output = ConvForward.apply(input if batched else input.unsqueeze(0), weight, bias, geometry)
    return output if batched else output.squeeze(0)
