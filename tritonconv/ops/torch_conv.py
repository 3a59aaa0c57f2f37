"""The `torch` route: a pass served by torch's own convolution kernels (cuDNN, MIOpen, or the CPU's).

It is a route like the Triton ones (`registry.TORCH_SPECS`): it applies to every problem, the
untimed rule never picks it, and the tuner times it beside the Triton candidates so a tuned layer
runs whichever is faster (`tuning/tuner.py`). Its launchers build, once per prepared call, a
closure over `torch.ops.aten.convolution` / `aten.convolution_backward` with the output mask the
pass needs; the closure returns the result torch allocated (a Triton route writes the output it is
given instead, so no copy is made here; callers take the returned tensor: `returned_or`).

Padding that differs at the two ends ('same' with an even kernel, a causal conv1d) is made
symmetric the way torch's 'same' does it: the extra is added to the input by `F.pad`, and an input
gradient is cropped back. A fused epilogue is torch's add and activation after the convolution.

While `use_aten()` serves aten's convolutions, a call this route makes to aten would come back to
tritonconv; `torch_kernels()` marks the thread so that `frontend/aten.py` hands it to torch's
kernel instead (`redirect_aten(True)` arms the check, so it costs nothing otherwise).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ..problem.arithmetic import CHANNELS_LAST, ConvProblem, is_channels_last_like, memory_format_of
from ..problem.config import KernelConfig
from .epilogue import NO_EPILOGUE, Epilogue, torch_activation

# aten::convolution through its C++ binding (a few microseconds less than the `torch.ops` overload);
# aten::convolution_backward has only the overload.
ATEN_CONVOLUTION = torch.convolution
ATEN_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default
# The route has no launch config; plans and cache entries carry this placeholder.
TORCH_CONFIG = KernelConfig(block_m=1, block_n=1, block_k=1, group_m=1, num_warps=1, num_stages=1)

_local = threading.local()
_redirecting = False


def redirect_aten(enabled: bool) -> None:
    """`frontend/aten.py` calls this when it starts (stops) serving aten's convolutions."""
    global _redirecting
    _redirecting = enabled


@contextlib.contextmanager
def torch_kernels() -> Iterator[None]:
    """Within: convolutions asked of aten on this thread go to torch's own kernels (`in_torch_kernels`)."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def in_torch_kernels() -> bool:
    return getattr(_local, "depth", 0) > 0


def _unredirected(compute: Callable) -> Callable:
    """`compute`, run inside `torch_kernels()` when `use_aten()` is serving aten (checked per call)."""

    def run(*arguments):
        if not _redirecting:
            return compute(*arguments)
        with torch_kernels():
            return compute(*arguments)

    return run


def symmetric_padding(
    problem: ConvProblem,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(stride, symmetric padding, dilation, what `F.pad` adds to the input first: (before, after) per
    axis, last axis first): padding larger at one end made symmetric, as torch's 'same' does."""
    stride, begin, end, dilation = problem.spatial_arguments
    both = tuple(min(b, e) for b, e in zip(begin, end, strict=True))
    extra = tuple(amount for b, e, s in reversed(list(zip(begin, end, both, strict=True))) for amount in (b - s, e - s))
    return tuple(stride), both, tuple(dilation), extra


def cropped_back(extra: tuple[int, ...], sizes: tuple[int, ...]) -> tuple:
    """The index that takes the unpadded input's positions (`sizes`) back out of one padded by
    `extra` (`symmetric_padding`'s): what an input gradient computed on the padded input is cropped to."""
    return (..., *(slice(before, before + size) for before, size in zip(extra[-2::-2], sizes, strict=True)))


def _padded_shape(problem: ConvProblem, extra: tuple[int, ...]) -> tuple[int, ...]:
    shape = list(problem.input_shape)
    for axis, (before, after) in enumerate(zip(extra[::2], extra[1::2], strict=True)):
        shape[-1 - axis] += before + after
    return tuple(shape)


def _in_layout(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`tensor` in the memory format the problem's output takes (torch mostly gives it already)."""
    return tensor.contiguous(memory_format=memory_format_of(tensor.dim(), channels_last))


def _shape_only(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A stand-in of `shape` for an operand `convolution_backward` reads only the shape of, as
    `torch.nn.grad` makes one (one element, expanded)."""
    return like.new_empty(1).expand(shape)


def _epilogue(output: torch.Tensor, bias: torch.Tensor | None, epilogue: Epilogue, residual, preactivation):
    """bias (when the convolution did not add it), residual, the kept pre-activation, the activation."""
    if bias is not None:
        output = output + bias.view(1, -1, *([1] * (output.dim() - 2)))
    if residual is not None:
        output = output + residual
    if preactivation is not None:
        preactivation.copy_(output)
    return torch_activation(output, epilogue.activation, epilogue.negative_slope) if epilogue.activation else output


def prepare_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, epilogue: Epilogue = NO_EPILOGUE,
) -> Callable[..., torch.Tensor]:  # fmt: skip
    """`run(x, weight, bias, y, residual, preactivation)` -> Y by `aten.convolution` (Y's buffer unused)."""
    stride, padding, dilation, extra = symmetric_padding(problem)
    zeros, groups, channels_last = (0,) * len(stride), problem.groups, problem.layout == CHANNELS_LAST
    pads, activation = any(extra), epilogue.activation

    def run(x, weight, bias, y=None, residual=None, preactivation=None) -> torch.Tensor:
        if pads:
            x = F.pad(x, extra)
        output = ATEN_CONVOLUTION(x, weight, bias, stride, padding, dilation, False, zeros, groups)
        if activation or residual is not None or preactivation is not None:
            output = _epilogue(output, None, epilogue, residual, preactivation)
        return _in_layout(output, channels_last)

    return _unredirected(run)


def prepare_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> Callable[..., torch.Tensor]:  # fmt: skip
    """`run(dY, W, dX, bias, residual, preactivation)` -> dX by `aten.convolution_backward` (mask: the
    input only), cropped where the padding was made symmetric; a transposed convolution's bias and
    epilogue follow in torch."""
    stride, padding, dilation, extra = symmetric_padding(problem)
    zeros, groups = (0,) * len(stride), problem.groups
    channels_last = is_channels_last_like(grad_input)
    padded = _padded_shape(problem, extra)
    crop = cropped_back(extra, problem.input_shape[2:]) if any(extra) else None
    activation = epilogue.activation

    def run(grad_output, weight, grad_input=None, bias=None, residual=None, preactivation=None) -> torch.Tensor:
        stand_in = _shape_only(grad_output, padded)
        result = ATEN_CONVOLUTION_BACKWARD(grad_output, stand_in, weight, None, stride, padding, dilation, False,
                                           zeros, groups, (True, False, False))[0]  # fmt: skip
        if crop is not None:
            result = result[crop]
        if activation or bias is not None or residual is not None or preactivation is not None:
            result = _epilogue(result, bias, epilogue, residual, preactivation)
        return _in_layout(result, channels_last)

    return _unredirected(run)


def prepare_wgrad(
    x: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, grad_bias: torch.Tensor | None = None,
) -> Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """`run(x, dY, dW[, db])` -> dW, or (dW, db) when prepared with `grad_bias`, by one
    `aten.convolution_backward` (mask: the weight, and the bias when asked)."""
    stride, padding, dilation, extra = symmetric_padding(problem)
    zeros, groups, shape = (0,) * len(stride), problem.groups, tuple(problem.weight_shape)
    channels_last = is_channels_last_like(grad_weight)
    with_bias = grad_bias is not None
    bias_sizes, pads, mask = ([problem.k] if with_bias else None), any(extra), (False, True, with_bias)

    def run(x, grad_output, grad_weight=None, grad_bias=None):
        if pads:
            x = F.pad(x, extra)
        stand_in = _shape_only(grad_output, shape)
        _, weight_grad, bias_grad = ATEN_CONVOLUTION_BACKWARD(
            grad_output, x, stand_in, bias_sizes, stride, padding, dilation, False, zeros, groups, mask
        )
        weight_grad = _in_layout(weight_grad, channels_last)
        return (weight_grad, bias_grad) if with_bias else weight_grad

    return _unredirected(run)


def returned_or(result: object, written: torch.Tensor) -> torch.Tensor:
    """What a run produced: the tensor it returned (the torch route), else the one it wrote (a kernel route)."""
    return written if result is None else result
