"""tritonconv's convolution as `torch.library` custom ops, so `torch.compile` can hold it in a graph.

Dynamo cannot trace the launchers (caches, plans, files); a custom op is opaque to it instead: the
graph records a call to `tritonconv::conv2d`, its fake implementation gives the output's shape,
dtype and memory format, and its registered autograd formula calls the gradient ops. Eager calls do
not come here (`functional.conv2d` takes the direct path, which costs less host time per call);
calls made while torch.compile traces do, and an eager backward under torch's legacy vmap
(gradcheck's batched checks: `differentiable.Gradients.for_operands`), whose fallback runs an op one
sample at a time. The gradient ops take 2-D and 3-D operands alike.

Padding is passed as four integers (top, left, bottom, right), since 'same' with an even dilated
kernel pads one more element at the end (six for a 3-D one).

Every convolution kind is in a graph as these ops: `tritonconv::conv2d` is the forward of 1-D (as
2-D with H = 1), 2-D and 3-D convolutions (by the operands' rank), and a transposed convolution of
any rank is `tritonconv::conv2d_input_grad`, the input gradient of the convolution it transposes
(what it runs eagerly too), with torch's pad and bias add around it. The forward ops take a
`count_as` name: a patched call traced into a graph names itself there ('conv3d',
'conv_transpose2d', ...) and the op counts it for `stats()` each time the graph runs it
(`call_counts.py`).

The gradient ops have autograd formulas of their own, made of the other ops: the input gradient is
bilinear in (dY, W) and the weight gradient in (x, dY), and each one's derivatives are the forward
and the other gradient with the operands' roles swapped. So gradients of gradients (double
backward: gradient penalties, Hessian-vector products) run the same Triton kernels, to any order.
An eager recorded backward (`create_graph=True`) takes the Functions of `differentiable.py` instead,
which have forward-mode formulas too (custom ops have none). The ops' vmap rules are
`vmap_rules.py`'s, as the Functions' are.
"""

import dataclasses
from collections.abc import Sequence
from typing import Optional

import torch

from ..plan.direct import Geometry, bias_grad_of, forward_of, input_grad_of, spread_bias_grad, weight_grad_of
from ..plan.prepared import call_key, prepared_conv
from ..problem import vmap_rules
from ..problem.arithmetic import (
    CHANNELS_LAST,
    CONTIGUOUS,
    ConvProblem,
    memory_format_of,
    per_axis,
    problem_from_schema,
    problem_from_tensors,
    resolve_padding,
)
from ..problem.arithmetic import is_channels_last_like as channels_last
from . import call_counts
from .autograd import conv_gradients, save_operands


def _empty(shape: Sequence[int], like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device,
                       memory_format=memory_format_of(len(shape), channels_last))  # fmt: skip


def _geometry(stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Geometry:
    """The gradient ops' arguments (leading then trailing paddings, one per spatial axis)."""
    axes = len(stride)
    return Geometry.with_bounds(stride, padding[:axes], padding[axes:], dilation, groups)


@torch.library.custom_op("tritonconv::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045 (torch.library's schema inference reads Optional on every torch)
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    count_as: str = "",
) -> torch.Tensor:
    """Forward of a batched (N, C, H, W) input, through a call prepared per key (`prepared.py`); a
    (N, C, D, H, W) one's through `direct.forward_of`. `count_as`: the patched op it serves, counted."""
    if count_as:
        call_counts.count(count_as)
    if weight.dim() == 5:
        return forward_of(input, weight, bias, _geometry(stride, padding, dilation, groups))
    geometry = (tuple(stride), tuple(padding), tuple(dilation), groups)
    key = call_key(input, weight, bias, geometry, LIBRARY_OP_KEY)
    prepared = prepared_conv(key, input, weight, bias, geometry, as_problem=problem_from_schema)
    return prepared.forward(input, weight, bias)


LIBRARY_OP_KEY = ("library op",)  # the op's geometry is normalized (four paddings): keys of its own


@conv2d_op.register_fake
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups, count_as=""):
    if weight.dim() == 5:
        layout = CHANNELS_LAST if channels_last(input) or channels_last(weight) else CONTIGUOUS
        geometry = _geometry(stride, padding, dilation, groups)
        problem = geometry.problem(input.shape, weight.shape, input.dtype, layout, bias is not None)
    else:
        problem = problem_from_schema(input, weight, bias, stride, padding, dilation, groups)
    return torch.empty(
        problem.output_shape, dtype=input.dtype, device=input.device, memory_format=problem.memory_format
    )


@torch.library.custom_op("tritonconv::conv2d_input_grad", mutates_args=())
def conv2d_input_grad_op(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_shape: list[int],
    input_channels_last: bool,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    count_as: str = "",
) -> torch.Tensor:
    """dX: the input itself is not needed, only its shape and layout. 2-D or 3-D, by the weight's
    rank. `count_as`: the patched transposed convolution it serves, counted."""
    if count_as:
        call_counts.count(count_as)
    geometry = _geometry(stride, padding, dilation, groups)
    return input_grad_of(grad_output, weight, geometry, input_shape, input_channels_last)


@conv2d_input_grad_op.register_fake
def _input_grad_fake(grad_output, weight, input_shape, input_channels_last, stride, padding, dilation, groups,
                     count_as=""):  # fmt: skip
    return _empty(input_shape, grad_output, input_channels_last)


@torch.library.custom_op("tritonconv::conv2d_weight_grad", mutates_args=())
def conv2d_weight_grad_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight_shape: list[int],
    weight_channels_last: bool,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """dW: the weight itself is not needed, only its shape and layout. 2-D or 3-D, by the input's rank."""
    geometry = _geometry(stride, padding, dilation, groups)
    return weight_grad_of(input, grad_output, geometry, weight_shape, weight_channels_last)


@conv2d_weight_grad_op.register_fake
def _weight_grad_fake(grad_output, input, weight_shape, weight_channels_last, stride, padding, dilation, groups):
    return _empty(weight_shape, input, weight_channels_last)


@torch.library.custom_op("tritonconv::conv2d_bias_grad", mutates_args=())
def conv2d_bias_grad_op(grad_output: torch.Tensor) -> torch.Tensor:
    """db of a 4-D or 5-D dY."""
    return bias_grad_of(grad_output)


@conv2d_bias_grad_op.register_fake
def _bias_grad_fake(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


@dataclasses.dataclass(frozen=True)
class OpGradients:
    """A convolution's gradients as custom ops (`autograd.ConvGradients`): a compiled graph holds
    them as it holds the forward, and, having autograd formulas, they are differentiable."""

    input_shape: list[int]
    input_channels_last: bool
    weight_shape: list[int]
    weight_channels_last: bool
    geometry: tuple  # (stride, four paddings, dilation, groups), as the ops take them

    @classmethod
    def of(cls, problem: ConvProblem, input_channels_last: bool, weight_channels_last: bool) -> "OpGradients":
        """The gradients of `problem`'s (2-D or 3-D) convolution: an eager backward's under torch's
        legacy vmap (gradcheck's batched-grad check), whose fallback runs ops one sample at a time."""
        stride, begin, end, dilation = map(list, problem.spatial_arguments)
        return cls(list(problem.input_shape), input_channels_last, list(problem.weight_shape), weight_channels_last,
                   (stride, [*begin, *end], dilation, problem.groups))  # fmt: skip

    def input_grad(self, grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return conv2d_input_grad_op(grad_output, weight, self.input_shape, self.input_channels_last, *self.geometry)

    def weight_grad(self, input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        return conv2d_weight_grad_op(grad_output, input, self.weight_shape, self.weight_channels_last, *self.geometry)

    def bias_grad(self, grad_output: torch.Tensor) -> torch.Tensor:
        return conv2d_bias_grad_op(grad_output)

    def weight_and_bias_grad(self, input: torch.Tensor, grad_output: torch.Tensor) -> tuple:
        """Two ops: the compiled graph's own reduction of db may fuse with its neighbours."""
        return self.weight_grad(input, grad_output), self.bias_grad(grad_output)

    def forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution itself, for the derivatives of the gradients (and a transposed one's dx)."""
        return conv2d_op(input, weight, bias, *self.geometry)


def _setup_context(ctx, inputs, output) -> None:
    input, weight, _, *arguments = inputs
    save_operands(ctx, input, weight)
    ctx.gradients = OpGradients(list(input.shape), channels_last(input), list(weight.shape), channels_last(weight),
                                tuple(arguments[:4]))  # fmt: skip


def _backward(ctx, grad_output):
    return *conv_gradients(ctx, grad_output, ctx.gradients), *[None] * 5


conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _setup_input_grad(ctx, inputs, output) -> None:
    grad_output, weight, input_shape, input_channels_last, *arguments = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.gradients = OpGradients(list(input_shape), input_channels_last, list(weight.shape), channels_last(weight),
                                tuple(arguments[:4]))  # fmt: skip


def _input_grad_backward(ctx, grad):
    """dX = dgrad(dY, W): d/d(dY) is the forward of `grad` by W, d/dW the weight gradient of
    `grad` (as the input) against dY."""
    grad_output, weight = ctx.saved_tensors
    gradients = ctx.gradients
    needs_grad_output, needs_weight = ctx.needs_input_grad[:2]
    return (
        gradients.forward(grad, weight) if needs_grad_output else None,
        gradients.weight_grad(grad, grad_output) if needs_weight else None,
        *[None] * 7,
    )


conv2d_input_grad_op.register_autograd(_input_grad_backward, setup_context=_setup_input_grad)


def _setup_weight_grad(ctx, inputs, output) -> None:
    grad_output, input, weight_shape, weight_channels_last, *geometry = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.gradients = OpGradients(list(input.shape), channels_last(input), list(weight_shape), weight_channels_last,
                                tuple(geometry))  # fmt: skip


def _weight_grad_backward(ctx, grad):
    """dW = wgrad(x, dY): d/d(dY) is the forward of x by `grad`, d/dx the input gradient of dY
    through `grad` as the weight."""
    grad_output, input = ctx.saved_tensors
    gradients = ctx.gradients
    needs_grad_output, needs_input = ctx.needs_input_grad[:2]
    return (
        gradients.forward(input, grad) if needs_grad_output else None,
        gradients.input_grad(grad_output, grad) if needs_input else None,
        *[None] * 6,
    )


conv2d_weight_grad_op.register_autograd(_weight_grad_backward, setup_context=_setup_weight_grad)


def _setup_bias_grad(ctx, inputs, output) -> None:
    (grad_output,) = inputs
    ctx.shape = grad_output.shape
    ctx.memory_format = memory_format_of(grad_output.dim(), channels_last(grad_output))


def _bias_grad_backward(ctx, grad):
    """db = dY summed over batch and pixels: its derivative spreads `grad` back over them."""
    return spread_bias_grad(grad, ctx.shape, ctx.memory_format)


conv2d_bias_grad_op.register_autograd(_bias_grad_backward, setup_context=_setup_bias_grad)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> torch.Tensor:
    """`F.conv2d`'s arguments, normalized to the op's, for a 3- or 4-D input (what a graph holds
    for conv2d and, with H = 1, conv1d)."""
    if input.dim() not in (3, 4) or weight.dim() != 4:
        problem_from_tensors(input, weight, bias, stride, padding, dilation, groups)  # raises torch's error
    return _forward(input, weight, bias, stride, padding, dilation, groups, axes=2)


def conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> torch.Tensor:
    """`F.conv3d`'s arguments as the op's, for a 4- or 5-D input (the op's fake validates the rest)."""
    if input.dim() not in (4, 5) or weight.dim() != 5:
        raise RuntimeError(
            f"Expected 4D (unbatched) or 5D (batched) input to conv3d, but got input of size: {list(input.shape)}"
        )
    return _forward(input, weight, bias, stride, padding, dilation, groups, axes=3)


def _forward(input, weight, bias, stride, padding, dilation, groups: int, axes: int) -> torch.Tensor:
    stride, dilation = per_axis(stride, "stride", axes), per_axis(dilation, "dilation", axes)
    begin, end = resolve_padding(padding, tuple(weight.shape[2:]), stride, dilation)
    geometry = (list(stride), [*begin, *end], list(dilation), groups)
    label = call_counts.compiled_label()
    if input.dim() == axes + 1:
        return conv2d_op(input.unsqueeze(0), weight, bias, *geometry, label).squeeze(0)
    return conv2d_op(input, weight, bias, *geometry, label)


def conv_transpose(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    output_padding: int | Sequence[int],
    groups: int,
    dilation: int | Sequence[int],
) -> torch.Tensor:
    """`F.conv_transpose2d`/`3d`'s arguments (by the weight's rank) as the input gradient of the
    convolution it transposes (`transposed.py`): its input is this output, its weight the same
    tensor, its output x, which takes zeros at its end where that convolution's output is larger
    (an output_padding past the stride). Sizes by torch's formulas, so symbolic shapes pass."""
    axes = weight.dim() - 2
    if input.dim() not in (axes + 1, axes + 2):
        raise RuntimeError(f"Expected {axes + 1}D (unbatched) or {axes + 2}D (batched) input to conv_transpose{axes}d, "
                           f"but got input of size: {list(input.shape)}")  # fmt: skip
    batched = input.dim() == axes + 2
    x = input if batched else input.unsqueeze(0)
    stride, padding, output_padding, dilation = (
        per_axis(value, name, axes)
        for value, name in ((stride, "stride"), (padding, "padding"), (output_padding, "output_padding"),
                            (dilation, "dilation"))
    )  # fmt: skip
    n, c_in, *sizes = x.shape
    if weight.shape[0] != c_in:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected input{list(x.shape)} "
                           f"to have {weight.shape[0]} channels, but got {c_in} channels instead")  # fmt: skip
    kernel = weight.shape[2:]
    spans = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
    shape = zip(sizes, stride, padding, spans, output_padding, strict=True)
    output = [(size - 1) * s - 2 * p + span + extra + 1 for size, s, p, span, extra in shape]
    below = [(out + 2 * p - span - 1) // s + 1 for out, p, span, s in zip(output, padding, spans, stride, strict=True)]
    x = padded_at_end(x, [have - size for have, size in zip(below, sizes, strict=True)])
    layout_channels_last = channels_last(x) or channels_last(weight)
    y = conv2d_input_grad_op(x, weight, [n, weight.shape[1] * groups, *output], layout_channels_last, list(stride),
                             [*padding, *padding], list(dilation), groups, call_counts.compiled_label())  # fmt: skip
    if bias is not None:
        y = y + bias.view(1, -1, *[1] * axes)
    return y if batched else y.squeeze(0)


def padded_at_end(x: torch.Tensor, missing: Sequence[int]) -> torch.Tensor:
    """x with `missing` zeros at the end of each spatial axis (by torch: differentiable, batchable),
    where a transposed convolution's x is smaller than the output of the convolution it transposes."""
    if not any(missing):
        return x
    return torch.nn.functional.pad(x, [amount for axis in reversed(missing) for amount in (0, axis)])


def _conv2d_vmap(info, in_dims, input, weight, bias, stride, padding, dilation, groups, count_as=""):
    def run(input, weight, bias, factor):
        return conv2d_op(input, weight, bias, stride, padding, dilation, groups * factor, count_as)

    return vmap_rules.forward_rule(run, info.batch_size, in_dims[:3], input, weight, bias)


def _input_grad_vmap(info, in_dims, grad_output, weight, input_shape, input_channels_last, stride, padding, dilation,
                     groups, count_as=""):  # fmt: skip
    def run(grad_output, weight, shape, factor):
        return conv2d_input_grad_op(grad_output, weight, shape, input_channels_last, stride, padding, dilation,
                                    groups * factor, count_as)  # fmt: skip

    return vmap_rules.input_grad_rule(run, info.batch_size, in_dims[:2], grad_output, weight, input_shape)


def _weight_grad_vmap(info, in_dims, grad_output, input, weight_shape, weight_channels_last, stride, padding,
                      dilation, groups):  # fmt: skip
    def run(input, grad_output, shape, factor):
        return conv2d_weight_grad_op(grad_output, input, shape, weight_channels_last, stride, padding, dilation,
                                     groups * factor)  # fmt: skip

    return vmap_rules.weight_grad_rule(run, info.batch_size, in_dims[1::-1], input, grad_output, weight_shape)


def _bias_grad_vmap(info, in_dims, grad_output):
    return vmap_rules.bias_grad_rule(conv2d_bias_grad_op, info.batch_size, in_dims[0], grad_output)


# torch.func.vmap over the ops (a vmapped compiled graph, a direct call): the rules the Functions use.
if hasattr(conv2d_op, "register_vmap"):  # torch >= 2.5
    conv2d_op.register_vmap(_conv2d_vmap)
    conv2d_input_grad_op.register_vmap(_input_grad_vmap)
    conv2d_weight_grad_op.register_vmap(_weight_grad_vmap)
    conv2d_bias_grad_op.register_vmap(_bias_grad_vmap)
