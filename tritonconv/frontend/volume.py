"""3-D convolutions (video, volumes): `tritonconv.conv3d` with `F.conv3d`'s semantics, computed by
the 3-D kernels (`kernels/conv3d.py`) through the same prepared calls, registry and tuning as 2-D.

Arguments are validated on first use of a key by torch's own function on data-free stand-ins
(`torch_reference.check_like_torch`), so every error is torch's. A call that is a 2-D convolution
on a view of its tensors (`planar.py`: kernels one slice deep in channels_last_3d, or one pixel
wide and tall) runs as one, through `conv2d`: its 1x1, TMA and other routes, its tuning, its
double backward. The output takes torch's memory
format (channels_last_3d when the input or the weight is). Under torch.compile and torch.export the
graph holds the custom op (`library_ops.py`); while a model's problems are recorded, and for an
input without channels, torch's own conv3d runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops.epilogue import NO_EPILOGUE, Epilogue, slope_constant, with_torch_epilogue
from ..plan.direct import Geometry
from ..plan.prepared import PreparedConv, call_key, check_residual, lookup
from ..problem.arithmetic import hashable, problem_from_tensors_3d
from ..problem.planar import PlanarCall, planar_call, volume_problem
from ..problem.torch_reference import TORCH_CONV3D, check_like_torch
from . import differentiable, library_ops
from .autograd import conv_gradients, save_operands
from .differentiable import transforms_active
from .functional import (
    autocast,
    autocast_dtype_for,
    check_activation,
    conv2d,
    fused_key,
    fused_needs_grad,
    gradients_of,
    recording_shapes,
    run_fused,
)

VOLUME_KEY = ("3-D",)


class Conv3dFunction(torch.autograd.Function):
    """conv3d with its input, weight and bias gradients in Triton, through a prepared call."""

    @staticmethod
    def forward(ctx, input, weight, bias, prepared: PreparedConv):
        output = prepared.forward(input, weight, bias)
        save_operands(ctx, input, weight)
        ctx.prepared = prepared
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return (*conv_gradients(ctx, grad_output, gradients_of(ctx.prepared, grad_output)), None)


def conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """3-D convolution computed by Triton kernels, with exactly `torch.nn.functional.conv3d`'s
    semantics: batched (N, C, D, H, W) or unbatched (C, D, H, W) input, NCDHW, channels_last_3d or
    any strided view (read in place), `padding='same'|'valid'`, fp16, bf16, fp32 (TF32 as torch
    decides) and fp64. Differentiable in input, weight and bias, every gradient in Triton, to any
    order (double backward), in forward mode and under torch.func's transforms. Under
    `torch.autocast` it computes in the autocast dtype.

    Fused epilogue, as `conv2d`'s: `activation(conv3d(input, weight, bias) + residual)` computed
    before the kernel stores its tile ('relu', 'silu', 'gelu', 'gelu_tanh', 'leaky_relu' with
    `negative_slope`); `residual` (the output's shape and dtype, any strides) gets its gradient."""
    if activation is not None or residual is not None:
        return _fused(input, weight, bias, (stride, padding, dilation, groups), activation, residual, negative_slope)
    if recording_shapes() or (input.dim() in (4, 5) and input.shape[-4] == 0):
        return TORCH_CONV3D(input, weight, bias, stride, padding, dilation, groups)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    if torch.compiler.is_compiling():  # torch.compile and torch.export hold the custom op (library_ops.py)
        return library_ops.conv3d(input, weight, bias, stride, padding, dilation, groups)
    geometry = tuple(hashable(a) for a in (stride, padding, dilation, groups))
    if transforms_active():  # forward AD or torch.func: Functions with tangents and vmap rules, no views
        check_like_torch(TORCH_CONV3D, input, weight, bias, geometry, batched_dim=5)
        return differentiable.convolution(input, weight, bias, Geometry.of(*geometry))
    prepared = lookup(
        call_key(input, weight, bias, geometry, VOLUME_KEY), lambda: _prepare(input, weight, bias, geometry)
    )
    batched = input.dim() == 5
    x = input if batched else input.unsqueeze(0)
    if prepared is PLANAR:  # a 2-D convolution on views (`planar.py`): conv2d's routes, tuning and autograd
        call = planar_call(x, weight, *geometry)
        output = call.restore(conv2d(call.input, call.weight, bias, **call.arguments))
        return output if batched else output.squeeze(0)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))
    output = Conv3dFunction.apply(x, weight, bias, prepared) if needs_grad else prepared.forward(x, weight, bias)
    return output if batched else output.squeeze(0)


def _fused(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple,
    activation: str | None,
    residual: torch.Tensor | None,
    negative_slope: float,
) -> torch.Tensor:
    """conv3d with an epilogue in the forward kernel (the 3-D one, or the 2-D one where the call is a
    2-D convolution on views and the residual views as its output too); while recording, under
    torch.compile and under forward AD or torch.func, the convolution then torch's add and activation."""
    check_activation(activation)
    no_channels = input.dim() in (4, 5) and input.shape[-4] == 0
    if recording_shapes() or torch.compiler.is_compiling() or transforms_active() or no_channels:
        return with_torch_epilogue(conv3d(input, weight, bias, *geometry), activation, residual, negative_slope)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    geometry = tuple(hashable(a) for a in geometry)
    needs_grad = fused_needs_grad(input, weight, bias, residual)
    activation = activation or ""
    epilogue = Epilogue(activation, slope_constant(activation, negative_slope))
    fused = (VOLUME_KEY, *fused_key(activation, negative_slope, residual, needs_grad))
    prepared = lookup(call_key(input, weight, bias, geometry, fused),
                      lambda: _prepare(input, weight, bias, geometry, epilogue, residual))  # fmt: skip
    batched = input.dim() == 5
    x = input if batched else input.unsqueeze(0)
    if residual is not None and not batched:
        residual = residual.unsqueeze(0)
    if prepared is PLANAR:  # the 2-D kernels' epilogue on views of the operands, the residual and the output
        call = planar_call(x, weight, *geometry)
        flat = None if residual is None else call.flatten(residual)
        epilogue_arguments = dict(activation=activation or None, residual=flat, negative_slope=negative_slope)
        output = call.restore(conv2d(call.input, call.weight, bias, **epilogue_arguments, **call.arguments))
    else:
        output = run_fused(prepared, x, weight, bias, residual, needs_grad)
    return output if batched else output.squeeze(0)


def _views_as_output(call: PlanarCall, residual: torch.Tensor | None) -> bool:
    """Whether the residual's 2-D view (`PlanarCall.flatten`) addresses the same elements: its
    strides nest as the output's do."""
    return residual is None or call.restore(call.flatten(residual)).stride() == residual.stride()


class _Planar:
    """What a key whose calls run as 2-D convolutions keeps in the prepared-call cache."""

    final = True


PLANAR = _Planar()


def _prepare(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: tuple,
    epilogue: Epilogue = NO_EPILOGUE, residual: torch.Tensor | None = None,
) -> tuple:  # fmt: skip
    """Validate the call as torch does (a fused call's residual against the output too), then either
    take the 2-D route on views or plan and prepare the 3-D kernels."""
    check_like_torch(TORCH_CONV3D, input, weight, bias, geometry, batched_dim=5)
    batched = input.dim() == 5
    x = input if batched else input.unsqueeze(0)
    if residual is not None:
        check_residual(problem_from_tensors_3d(x, weight, bias, *geometry).output_shape, residual, batched,
                       input.dtype, input.device)  # fmt: skip
        residual = residual if batched else residual.unsqueeze(0)
    problem, planar = volume_problem(input, weight, bias, *geometry)
    if planar is not None and _views_as_output(planar, residual):
        return PLANAR, True
    if planar is not None:  # a residual whose strides do not nest as the output's: the 3-D kernel takes it
        problem = problem_from_tensors_3d(input, weight, bias, *geometry)
    prepared = PreparedConv(problem, x, weight, epilogue)
    return prepared, prepared.final
