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

from ..ops.epilogue import NO_EPILOGUE
from ..plan.direct import Geometry
from ..plan.prepared import PreparedConv, call_key, lookup
from ..problem.arithmetic import hashable
from ..problem.planar import planar_call, volume_problem
from ..problem.torch_reference import TORCH_CONV3D, check_like_torch
from . import differentiable, library_ops
from .autograd import conv_gradients, save_operands
from .differentiable import transforms_active
from .functional import autocast, autocast_dtype_for, conv2d, gradients_of, recording_shapes

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
) -> torch.Tensor:
    """3-D convolution computed by Triton kernels, with exactly `torch.nn.functional.conv3d`'s
    semantics: batched (N, C, D, H, W) or unbatched (C, D, H, W) input, NCDHW, channels_last_3d or
    any strided view (read in place), `padding='same'|'valid'`, fp16, bf16, fp32 (TF32 as torch
    decides) and fp64. Differentiable in input, weight and bias, every gradient in Triton, to any
    order (double backward), in forward mode and under torch.func's transforms. Under
    `torch.autocast` it computes in the autocast dtype."""
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


class _Planar:
    """What a key whose calls run as 2-D convolutions keeps in the prepared-call cache."""

    final = True


PLANAR = _Planar()


def _prepare(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: tuple) -> tuple:
    """Validate the call as torch does, then either take the 2-D route on views or plan and prepare
    the 3-D kernels."""
    check_like_torch(TORCH_CONV3D, input, weight, bias, geometry, batched_dim=5)
    problem, planar = volume_problem(input, weight, bias, *geometry)
    if planar is not None:
        return PLANAR, True
    prepared = PreparedConv(problem, input if input.dim() == 5 else input.unsqueeze(0), weight, NO_EPILOGUE)
    return prepared, prepared.final
