"""A convolution's four passes by key, without autograd: the forward, the input gradient, the
weight gradient and the bias gradient of tensors of any shape and layout, each through a call
prepared once per key (`prepared.py`), as the direct path plans its own. The differentiable
Functions (`differentiable.py`), the custom ops (`library_ops.py`) and the aten kernels
(`aten.py`) are made of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..ops.epilogue import NO_EPILOGUE
from ..ops.wgrad import bias_grad_operand
from ..problem.arithmetic import (
    CHANNELS_LAST,
    CONTIGUOUS,
    ConvProblem,
    hashable,
    is_channels_last_like,
    make_problem,
    make_problem_3d,
)
from ..problem.torch_reference import TORCH_CONV2D, TORCH_CONV3D, check_like_torch
from ..routes.calls import conv2d_bias_grad
from ..routes.registry import Pass
from .prepared import PreparedConv, call_key, flags_key, lookup, tensor_key


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A convolution's arguments other than its tensors, as `F.conv2d`/`conv3d` take them (padding
    may be 'same' or 'valid'), hashable for the keys of prepared calls. `contiguous_output` asks for
    a contiguous output whatever the operands' layout (torch's conv1d gives one)."""

    stride: int | tuple[int, ...]
    padding: str | int | tuple[int, ...]
    dilation: int | tuple[int, ...]
    groups: int
    contiguous_output: bool = False
    # The trailing padding where it differs from `padding` and is not torch's 'same' (a causal
    # conv1d's: all its padding at the start); None where `padding` says it all.
    padding_end: tuple[int, ...] | None = None

    @classmethod
    def of(cls, stride, padding, dilation, groups: int, contiguous_output: bool = False) -> Geometry:
        """From torch's arguments (lists as tuples)."""
        return cls(hashable(stride), hashable(padding), hashable(dilation), groups, contiguous_output)

    @classmethod
    def of_problem(cls, problem: ConvProblem) -> Geometry:
        """A resolved problem's geometry: its padding is symmetric, or torch's 'same' (the one way
        torch pads one element more at the end)."""
        return cls.with_bounds(*problem.spatial_arguments, problem.groups)

    @classmethod
    def with_bounds(
        cls, stride: Sequence[int], begin: Sequence[int], end: Sequence[int], dilation: Sequence[int], groups: int
    ) -> Geometry:
        """From explicit leading and trailing padding (what the custom ops carry): symmetric, torch's
        'same' (half the reach at the start, one more at the end where it is odd), or explicit bounds."""
        begin, end = tuple(begin), tuple(end)
        if begin == end:
            return cls(tuple(stride), begin, tuple(dilation), groups)
        if all(last - first in (0, 1) and first == (first + last) // 2 for first, last in zip(begin, end, strict=True)):
            return cls(tuple(stride), "same", tuple(dilation), groups)
        return cls(tuple(stride), begin, tuple(dilation), groups, padding_end=end)

    def grouped(self, batch: int) -> Geometry:
        """The same convolution run for `batch` weights at once, as one with `batch` times the groups."""
        return dataclasses.replace(self, groups=self.groups * batch)

    def problem(
        self, input_shape: Sequence[int], weight_shape: Sequence[int], dtype: torch.dtype, layout: str,
        has_bias: bool = False,
    ) -> ConvProblem:  # fmt: skip
        """The (validated) problem of a batched input and a weight of these shapes."""
        arguments = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                         dtype=dtype, layout=layout, has_bias=has_bias)  # fmt: skip
        if len(weight_shape) == 5:
            n, c, d, h, w = input_shape
            k, _, t, r, s = weight_shape
            problem = make_problem_3d(n=n, c=c, d=d, h=h, w=w, k=k, t=t, r=r, s=s, **arguments)
            if self.padding_end is not None:
                depth = dataclasses.replace(problem.depth, padding_end=self.padding_end[0])
                problem = dataclasses.replace(problem, depth=depth, padding_end=tuple(self.padding_end[1:]))
            return problem
        n, c, h, w = input_shape
        k, _, r, s = weight_shape
        problem = make_problem(n=n, c=c, h=h, w=w, k=k, r=r, s=s, **arguments)
        return problem if self.padding_end is None else dataclasses.replace(problem, padding_end=self.padding_end)


def _layout(*channels_last: bool) -> str:
    return CHANNELS_LAST if any(channels_last) else CONTIGUOUS


FORWARD_KEY = ("differentiable",)


def forward_of(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: Geometry
) -> torch.Tensor:
    """conv(input, weight) + bias by the planned kernels, no autograd: the output in torch's memory
    format (channels_last when an operand is), contiguous when `geometry` asks. The first call of a
    key checks the arguments as torch does (raising its errors)."""

    def prepare() -> tuple[PreparedConv, bool]:
        torch_function = TORCH_CONV3D if weight.dim() == 5 else TORCH_CONV2D
        arguments = (geometry.stride, geometry.padding, geometry.dilation, geometry.groups)
        check_like_torch(torch_function, input, weight, bias, arguments, batched_dim=weight.dim())
        layout = CONTIGUOUS if geometry.contiguous_output else _layout(*map(is_channels_last_like, (input, weight)))
        problem = geometry.problem(input.shape, weight.shape, input.dtype, layout, bias is not None)
        prepared = PreparedConv(problem, input, weight, NO_EPILOGUE)
        return prepared, prepared.final

    return lookup(call_key(input, weight, bias, geometry, FORWARD_KEY), prepare).forward(input, weight, bias)


_OTHER = {Pass.DGRAD: "weight", Pass.WGRAD: "input"}


def _gradient_call(
    key: tuple, operands: tuple[torch.Tensor, torch.Tensor], geometry: Geometry, input_shape: Sequence[int],
    weight_shape: Sequence[int], input_channels_last: bool, weight_channels_last: bool, layout: str,
) -> PreparedConv:  # fmt: skip
    """The prepared call that serves a gradient pass for `key` (its operands, dY first, shapes and
    layouts): its first use checks that the operands fit the convolution, since a direct caller
    (`torch.ops.aten.convolution_backward`) may give any."""
    pass_name = key[0]

    def prepare() -> tuple[PreparedConv, bool]:
        like = operands[0]
        problem = geometry.problem(input_shape, weight_shape, like.dtype, layout)
        expected = (problem.output_shape, problem.weight_shape if pass_name == Pass.DGRAD else problem.input_shape)
        for tensor, shape, name in zip(operands, expected, ("grad_output", _OTHER[pass_name]), strict=True):
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != like.dtype or tensor.device != like.device:
                raise RuntimeError(
                    f"{pass_name}: expected {name} of shape {list(shape)}, dtype {like.dtype} and device "
                    f"{like.device} for this convolution, got {list(tensor.shape)}, {tensor.dtype}, {tensor.device}"
                )
        return PreparedConv.for_gradients(problem, like, input_channels_last, weight_channels_last), True

    return lookup((*key, geometry, flags_key()), prepare)


def input_grad_of(
    grad_output: torch.Tensor, weight: torch.Tensor, geometry: Geometry, input_shape: Sequence[int],
    input_channels_last: bool,
) -> torch.Tensor:  # fmt: skip
    """dX of a convolution whose input has `input_shape`, laid out as asked, no autograd."""
    key = (Pass.DGRAD, tensor_key(grad_output), tensor_key(weight), tuple(input_shape), input_channels_last)
    call = _gradient_call(key, (grad_output, weight), geometry, input_shape, weight.shape, input_channels_last,
                          is_channels_last_like(weight), _layout(input_channels_last))  # fmt: skip
    return call.input_grad(grad_output, weight)


def weight_grad_of(
    input: torch.Tensor, grad_output: torch.Tensor, geometry: Geometry, weight_shape: Sequence[int],
    weight_channels_last: bool,
) -> torch.Tensor:  # fmt: skip
    """dW of a convolution whose weight has `weight_shape`, laid out as asked, no autograd."""
    input_channels_last = is_channels_last_like(input)
    key = (Pass.WGRAD, tensor_key(grad_output), tensor_key(input), tuple(weight_shape), weight_channels_last)
    call = _gradient_call(key, (grad_output, input), geometry, input.shape, weight_shape, input_channels_last,
                          weight_channels_last, _layout(input_channels_last, weight_channels_last))  # fmt: skip
    return call.weight_grad(input, grad_output)


def bias_grad_of(grad_output: torch.Tensor) -> torch.Tensor:
    """db: dY summed over the batch and every spatial axis, one Triton reduction, no autograd."""
    return conv2d_bias_grad(bias_grad_operand(grad_output))


def spread_bias_grad(grad: torch.Tensor, shape: torch.Size, memory_format: torch.memory_format) -> torch.Tensor:
    """The derivative of db = sum(dY): `grad` spread back over the batch and the pixels of dY."""
    spatial = [1] * (len(shape) - 2)
    return grad.view(1, -1, *spatial).expand(shape).contiguous(memory_format=memory_format)
