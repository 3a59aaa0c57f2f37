"""Transposed convolutions, `F.conv_transpose2d`/`conv_transpose1d` with their exact semantics, through
the convolution kernels tritonconv already has.

A transposed convolution of x (N, C_in, H, W) with weight (C_in, C_out/g, kH, kW) is the input
gradient of the convolution whose input is the transposed output (N, C_out, H_out, W_out), whose
weight is that same tensor (as a conv weight it is (K = C_in, C/g = C_out/g, R, S)) and whose output
is x. So its forward runs the dgrad routes (masking, stride phases, 1x1, depthwise, TMA), and its
gradients are that convolution's forward (for x) and weight gradient (with the roles of input and
grad_output swapped), all through one prepared call (`prepared.PreparedConv.for_gradients`).

Arguments are validated on first use of a key by torch's own function on data-free stand-ins
(`check_like_torch`), so every error is torch's. The bias is added in the kernel's tail, and so is
a fused epilogue (`activation`, `residual`: what a ConvTranspose-BN-ReLU decoder block runs with
`patch(fuse=True)`), through the same epilogue machinery as the forward kernels'. Under
torch.compile and torch.export the graph holds the underlying input gradient's custom op
(`library_ops.conv_transpose`); under forward AD and torch.func it runs as the differentiable
`InputGrad` (`differentiable.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..ops.epilogue import NO_EPILOGUE, Epilogue, slope_constant, with_torch_epilogue
from ..plan.direct import Geometry
from ..plan.dispatch import describe
from ..plan.prepared import PreparedConv, call_key, check_residual, lookup
from ..problem.arithmetic import (
    CHANNELS_LAST,
    CONTIGUOUS,
    ConvProblem,
    hashable,
    is_channels_last_like,
    make_problem,
    make_problem_3d,
    per_axis,
)
from ..problem.torch_reference import check_like_torch
from ..routes.registry import TRANSPOSED_PASSES
from . import library_ops
from .differentiable import InputGrad, transforms_active
from .functional import (
    autocast,
    autocast_dtype_for,
    check_activation,
    fused_key,
    fused_needs_grad,
    gradients_of,
    preactivation_gradient,
    recording_shapes,
)

TORCH_CONV_TRANSPOSE2D = F.conv_transpose2d
TORCH_CONV_TRANSPOSE1D = F.conv_transpose1d
TORCH_CONV_TRANSPOSE3D = F.conv_transpose3d
TRANSPOSE_KEY = ("transposed",)
AXIS_NAMES = ("depth", "height", "width")


@dataclasses.dataclass(frozen=True)
class TransposedCall:
    """A key's prepared underlying convolution, and how many slices, rows and columns of zeros x
    lacks (per spatial axis) to be that convolution's output: an output_padding reaching past the
    stride (allowed under dilation) makes the convolution's output larger than x; x then takes that
    many zeros at its end. `epilogue` is a fused call's activation and slope (no tensors)."""

    prepared: PreparedConv
    missing: tuple[int, ...]
    epilogue: Epilogue = NO_EPILOGUE

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        return library_ops.padded_at_end(x, self.missing)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The transposed convolution: the underlying convolution's input gradient, the bias added
        in its kernel."""
        return self.prepared.input_grad(self.padded(x), weight, bias)

    def forward_with_epilogue(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
        for_backward: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """(activation(transposed convolution + bias + residual), what the activation's derivative
        reads), all in the input-gradient kernel's tail (`PreparedConv.input_grad_with_epilogue`)."""
        return self.prepared.input_grad_with_epilogue(self.padded(x), weight, bias, residual, self.epilogue,
                                                      for_backward)  # fmt: skip

    def input_grad(
        self, grad_output: torch.Tensor, weight: torch.Tensor, shape: torch.Size, source: object
    ) -> torch.Tensor:
        """dx: the underlying convolution's forward of grad_output (by `source`: the prepared call
        or the differentiable ops), without the rows x lacks."""
        grad = source.forward(grad_output, weight, None)
        return grad if grad.shape == shape else grad[(..., *(slice(0, size) for size in shape[2:]))]

    def gradients(self, ctx, grad_output: torch.Tensor) -> tuple:
        """(dx, dW, db) of a Function that saved (x if dW is needed, W if dx is) first: dx is the
        underlying convolution's forward of grad_output, dW its weight gradient (grad_output as its
        input, x as its dY), db the sum of grad_output. Through the differentiable Functions when
        the backward is recorded, carries tangents or is vmapped (`functional.gradients_of`), so the
        gradients are differentiable and batchable too."""
        input, weight = ctx.saved_tensors[:2]
        source = gradients_of(self.prepared, grad_output)
        needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        return (
            self.input_grad(grad_output, weight, ctx.input_shape, source) if needs_input else None,
            source.weight_grad(grad_output, self.padded(input)) if needs_weight else None,
            source.bias_grad(grad_output) if needs_bias else None,
        )


class ConvTranspose2dFunction(torch.autograd.Function):
    """The forward is the dgrad of the underlying convolution; its gradients are that convolution's
    forward (dx) and weight gradient (`TransposedCall.gradients`)."""

    @staticmethod
    def forward(ctx, input, weight, bias, call: TransposedCall):
        needs_input, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(input if needs_weight else None, weight if needs_input else None)
        ctx.call, ctx.input_shape = call, input.shape
        return call.forward(input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        return (*ctx.call.gradients(ctx, grad_output), None)


class FusedConvTransposeFunction(torch.autograd.Function):
    """activation(conv_transpose(input, weight, bias) + residual), all in the input-gradient
    kernel's tail. The backward turns dY into dZ (Z = the transposed convolution + bias + residual)
    as the fused forward's does (`functional.preactivation_gradient`); dZ is the residual's gradient
    and feeds the transposed convolution's gradients."""

    @staticmethod
    def forward(ctx, input, weight, bias, residual, call: TransposedCall):
        needs_input, needs_weight = ctx.needs_input_grad[:2]
        output, saved = call.forward_with_epilogue(input, weight, bias, residual, for_backward=True)
        ctx.save_for_backward(input if needs_weight else None, weight if needs_input else None, saved)
        ctx.call, ctx.input_shape = call, input.shape
        return output

    @staticmethod
    def backward(ctx, grad_output):
        call = ctx.call
        grad_z = preactivation_gradient(call.prepared, call.epilogue, grad_output, ctx.saved_tensors[2])
        grad_residual = grad_z if ctx.needs_input_grad[3] else None
        return (*call.gradients(ctx, grad_z), grad_residual, None)


def conv_transpose2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """2-D transposed convolution with exactly `torch.nn.functional.conv_transpose2d`'s semantics
    (batched or unbatched input, any layout; the output takes torch's memory format), computed by
    tritonconv's kernels and differentiable in input, weight and bias.

    Fused epilogue, as `conv2d`'s: `activation` ('relu', 'silu', 'gelu', 'gelu_tanh', 'leaky_relu'
    with `negative_slope`) and `residual` (the output's shape and dtype, any strides) make the result
    `activation(conv_transpose2d(input, weight, bias) + residual)`, computed in the kernel before it
    stores its tile; `residual` gets its gradient too."""
    if activation is not None or residual is not None:
        geometry = (stride, padding, output_padding, groups, dilation)
        return _fused(TORCH_CONV_TRANSPOSE2D, 2, input, weight, bias, geometry, activation, residual, negative_slope)
    return _transposed(TORCH_CONV_TRANSPOSE2D, 2, input, weight, bias, stride, padding, output_padding, groups,
                       dilation)  # fmt: skip


def conv_transpose3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """3-D transposed convolution with exactly `torch.nn.functional.conv_transpose3d`'s semantics,
    computed by the 3-D kernels (its forward is the 3-D input gradient) and differentiable in
    input, weight and bias, with `conv_transpose2d`'s fused epilogue (`activation`, `residual`)."""
    if activation is not None or residual is not None:
        geometry = (stride, padding, output_padding, groups, dilation)
        return _fused(TORCH_CONV_TRANSPOSE3D, 3, input, weight, bias, geometry, activation, residual, negative_slope)
    return _transposed(TORCH_CONV_TRANSPOSE3D, 3, input, weight, bias, stride, padding, output_padding, groups,
                       dilation)  # fmt: skip


def _transposed(torch_function, axes: int, input, weight, bias, stride, padding, output_padding, groups, dilation):
    """The 2-D or 3-D (`axes`) transposed convolution through a prepared underlying convolution."""
    if recording_shapes():
        return torch_function(input, weight, bias, stride, padding, output_padding, groups, dilation)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    if torch.compiler.is_compiling():  # the graph holds the input-gradient op (library_ops.conv_transpose)
        return library_ops.conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)
    geometry = tuple(hashable(a) for a in (stride, padding, output_padding, groups, dilation))
    if transforms_active():
        return _transformed(torch_function, axes, input, weight, bias, geometry)
    call = transposed_call(torch_function, axes, input, weight, bias, geometry)
    batched = input.dim() == axes + 2
    x = input if batched else input.unsqueeze(0)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))
    output = ConvTranspose2dFunction.apply(x, weight, bias, call) if needs_grad else call.forward(x, weight, bias)
    return output if batched else output.squeeze(0)


def _fused(
    torch_function, axes: int, input, weight, bias, geometry: tuple, activation: str | None,
    residual: torch.Tensor | None, negative_slope: float,
) -> torch.Tensor:  # fmt: skip
    """A transposed convolution with an epilogue in the input-gradient kernel's tail; while
    recording, under torch.compile (Inductor fuses the epilogue) and under forward AD or torch.func,
    the transposed convolution then torch's add and activation."""
    check_activation(activation)
    if recording_shapes() or torch.compiler.is_compiling() or transforms_active():
        output = _transposed(torch_function, axes, input, weight, bias, *geometry)
        return with_torch_epilogue(output, activation, residual, negative_slope)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    geometry = tuple(hashable(a) for a in geometry)
    needs_grad = fused_needs_grad(input, weight, bias, residual)
    activation = activation or ""
    epilogue = Epilogue(activation, slope_constant(activation, negative_slope))
    fused = (*TRANSPOSE_KEY, *fused_key(activation, negative_slope, residual, needs_grad))
    call = lookup(
        call_key(input, weight, bias, geometry, fused),
        lambda: _prepare(torch_function, axes, input, weight, bias, geometry, epilogue, residual),
    )
    batched = input.dim() == axes + 2
    x = input if batched else input.unsqueeze(0)
    if residual is not None and not batched:
        residual = residual.unsqueeze(0)
    if needs_grad:
        output = FusedConvTransposeFunction.apply(x, weight, bias, residual, call)
    else:
        output = call.forward_with_epilogue(x, weight, bias, residual, for_backward=False)[0]
    return output if batched else output.squeeze(0)


def transposed_call(
    torch_function, axes: int, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: tuple
) -> TransposedCall:  # fmt: skip
    """The prepared call of a 2-D or 3-D (`axes`) transposed convolution, validated as torch
    validates it on first use of its key; `geometry` is (stride, padding, output_padding, groups,
    dilation), hashable."""
    return lookup(call_key(input, weight, bias, geometry, TRANSPOSE_KEY),
                  lambda: _prepare(torch_function, axes, input, weight, bias, geometry))  # fmt: skip


def _transformed(torch_function, axes: int, input, weight, bias, geometry: tuple) -> torch.Tensor:
    """Under forward AD or torch.func: the underlying convolution's input gradient as the
    differentiable `InputGrad` (tangents, vmap rules, gradients of any order), x padded by torch
    where the convolution's output is larger than x, the bias added by torch."""
    _check(torch_function, axes, input, weight, bias, geometry)
    problem = transposed_problem(input, weight, bias, geometry)
    batched = input.dim() == axes + 2
    x = input if batched else input.unsqueeze(0)
    x = library_ops.padded_at_end(x, _missing(problem, x))
    output = InputGrad.apply(x, weight, Geometry.of_problem(problem), problem.input_shape,
                             problem.layout == CHANNELS_LAST)  # fmt: skip
    if bias is not None:
        output = output + bias.view(1, -1, *[1] * axes)
    return output if batched else output.squeeze(0)


def _missing(problem: ConvProblem, x: torch.Tensor) -> tuple[int, ...]:
    """Per spatial axis, how much larger the underlying convolution's output is than x (batched)."""
    return tuple(size - have for size, have in zip(problem.output_shape[2:], x.shape[2:], strict=True))


def _check(torch_function, axes: int, input, weight, bias, geometry: tuple) -> None:
    """Raise what torch raises for these arguments: its checks before its kernels and in them."""
    stride, _, output_padding, _, dilation = geometry
    check_like_torch(torch_function, input, weight, bias, geometry, batched_dim=axes + 2)
    _check_kernel_arguments(input, weight, bias, stride, output_padding, dilation, axes)


def _prepare(
    torch_function, axes: int, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: tuple,
    epilogue: Epilogue = NO_EPILOGUE, residual: torch.Tensor | None = None,
) -> tuple:  # fmt: skip
    """Validate the call as torch does (`check_like_torch`, then the checks torch makes inside its
    kernels; a fused call's residual against the output) and prepare the underlying convolution,
    whose input is the transposed output; the meta kernel gives the output's shape."""
    _check(torch_function, axes, input, weight, bias, geometry)
    problem = transposed_problem(input, weight, bias, geometry)
    batched = input.dim() == axes + 2
    like = input if batched else input.unsqueeze(0)
    if residual is not None:  # the transposed convolution's output is the underlying one's input
        check_residual(problem.input_shape, residual, batched, input.dtype, input.device)
    channels_last = problem.layout == CHANNELS_LAST
    prepared = PreparedConv.for_gradients(problem, like, channels_last, is_channels_last_like(weight))
    return TransposedCall(prepared, _missing(problem, like), epilogue), True


def transposed_problem(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: tuple
) -> ConvProblem:
    """The convolution whose input gradient is this transposed convolution: its input is the
    transposed output, its weight the same tensor, its output x. From shapes alone (torch's meta
    kernel gives the output's); the arguments must have been checked."""
    stride, padding, output_padding, groups, dilation = geometry
    volume = weight.dim() == 5
    torch_function = TORCH_CONV_TRANSPOSE3D if volume else TORCH_CONV_TRANSPOSE2D
    meta = [None if t is None else torch.empty(t.shape, dtype=t.dtype, device="meta") for t in (input, weight, bias)]
    output = torch_function(*meta, stride, padding, output_padding, groups, dilation)
    n, c_out, *sizes = output.shape if output.dim() == weight.dim() else (1, *output.shape)
    c_in, _, *kernel = weight.shape
    like = input if input.dim() == weight.dim() else input.unsqueeze(0)
    # torch's rule for a convolution's output (the meta kernel does not follow it): channels_last when
    # the input or the weight is.
    channels_last = is_channels_last_like(like) or is_channels_last_like(weight)
    layout = CHANNELS_LAST if channels_last else CONTIGUOUS
    if volume:
        (d, h, w), (t, r, s) = sizes, kernel
        return make_problem_3d(n=n, c=c_out, d=d, h=h, w=w, k=c_in, t=t, r=r, s=s, stride=stride, padding=padding,
                               dilation=dilation, groups=groups, dtype=input.dtype, layout=layout)  # fmt: skip
    (h, w), (r, s) = sizes, kernel
    return make_problem(n=n, c=c_out, h=h, w=w, k=c_in, r=r, s=s, stride=stride, padding=padding,
                        dilation=dilation, groups=groups, dtype=input.dtype, layout=layout)  # fmt: skip


def explain_transposed(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> dict:
    """Say what `conv_transpose2d` would run for these arguments, without running it: `explain`'s
    answer (variant, config and source of the forward, of each gradient under `backward`, every
    pass's `routes`), where `problem` is the underlying convolution and each pass is the one of its
    passes that serves the transposed one's (the forward is its dgrad)."""
    geometry = tuple(hashable(a) for a in (stride, padding, output_padding, groups, dilation))
    axes = weight.dim() - 2 if weight.dim() == 5 else 2
    _check(TORCH_CONV_TRANSPOSE3D if axes == 3 else TORCH_CONV_TRANSPOSE2D, axes, input, weight, bias, geometry)
    return describe(transposed_problem(input, weight, bias, geometry), TRANSPOSED_PASSES)


TRANSPOSED_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
TRANSPOSED_DEFAULTS = {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1}


def problem_of_call(one_dimensional: bool, *args, **kwargs) -> ConvProblem:
    """The underlying convolution (`transposed_problem`) of an `F.conv_transpose2d`/`1d` call, in
    the dtype autocast would compute in; a 1-D call as the 2-D one with H = 1 that serves it."""
    call = dict(zip(TRANSPOSED_PARAMETERS, args, strict=False)) | kwargs
    input, weight, bias = call["input"], call["weight"], call.get("bias")
    dtype = autocast_dtype_for(input)
    if dtype is not None:
        input, weight, bias = (autocast(t, dtype) for t in (input, weight, bias))
    stride, padding, output_padding, groups, dilation = (call.get(name, d) for name, d in TRANSPOSED_DEFAULTS.items())
    if one_dimensional:
        input, weight = input.unsqueeze(-2), weight.unsqueeze(-2)
        stride, dilation = (1, _single(stride)), (1, _single(dilation))
        padding, output_padding = (0, _single(padding)), (0, _single(output_padding))
    geometry = tuple(hashable(a) for a in (stride, padding, output_padding, groups, dilation))
    return transposed_problem(input, weight, bias, geometry)


SCALAR_TYPE_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16"}


def _check_kernel_arguments(input, weight, bias, stride, output_padding, dilation, axes: int = 2) -> None:
    """The checks torch makes in its kernels rather than before them (an empty batch skips them)."""
    for other in (weight, bias):
        if other is not None and other.dtype != input.dtype:
            raise RuntimeError(
                f"expected scalar type {SCALAR_TYPE_NAMES.get(input.dtype, input.dtype)} but found "
                f"{SCALAR_TYPE_NAMES.get(other.dtype, other.dtype)}"
            )
    given = {"output_padding": output_padding, "stride": stride, "dilation": dilation}
    values = {name: per_axis(value, name, axes) for name, value in given.items()}
    output_padding, stride, dilation = values.values()
    if not all(op < st or op < dl for op, st, dl in zip(output_padding, stride, dilation, strict=True)):
        names = AXIS_NAMES[3 - axes :]
        described = " ".join(f"{label}_{axis}: {value}" for label, values in values.items()
                             for axis, value in zip(names, values, strict=True))  # fmt: skip
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got {described}")


def conv_transpose1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """1-D transposed convolution with `F.conv_transpose1d`'s semantics, as the 2-D one with H = 1,
    with `conv_transpose2d`'s fused epilogue (`activation`, `residual`)."""
    epilogue = {"activation": activation, "residual": residual, "negative_slope": negative_slope}
    if recording_shapes() or input.dim() not in (2, 3) or weight.dim() != 3:
        output = TORCH_CONV_TRANSPOSE1D(input, weight, bias, stride, padding, output_padding, groups, dilation)
        return with_torch_epilogue(output, activation, residual, negative_slope)
    if residual is not None:
        epilogue["residual"] = residual.unsqueeze(-2)
    geometry = (stride, padding, output_padding, groups, dilation)
    if not torch.compiler.is_compiling():  # a traced call is checked by the op (`library_ops.conv_transpose`)
        check_like_torch(TORCH_CONV_TRANSPOSE1D, input, weight, bias, geometry, batched_dim=3)
    stride_2d, dilation_2d = (1, _single(stride)), (1, _single(dilation))
    padding_2d, output_padding_2d = (0, _single(padding)), (0, _single(output_padding))
    output = conv_transpose2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, stride_2d, padding_2d,
                              output_padding_2d, groups, dilation_2d, **epilogue)  # fmt: skip
    return output.squeeze(-2).contiguous()  # torch's conv_transpose1d output is contiguous


def _single(value: int | Sequence[int]) -> int:
    return value[0] if isinstance(value, Sequence) else value
