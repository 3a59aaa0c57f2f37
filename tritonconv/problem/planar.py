"""3-D convolutions that are 2-D ones on a view of the same memory, so the 2-D routes (1x1 GEMM,
TMA, stride phases, their tuning) serve them with no copy:

- a kernel one slice deep with no depth padding (R(2+1)D's spatial 1x3x3 convolutions, 1x1x1
  projections and strided downsamples) on a channels_last_3d input: each output slice is a 2-D
  convolution of one input slice, so (N, C, D, H, W) taken every `stride_d` slices is a batch of
  N*D' channels_last images, a view when the depth and batch strides nest (a dense input, its
  depth a multiple of the stride);
- a kernel one pixel wide and tall with no spatial stride or padding (the temporal 3x1x1
  convolutions, 1x1x1 ones in NCDHW): height and width are one axis, so (N, C, D, H*W) with a
  (T, 1) kernel is the same convolution, a view in both layouts.

`planar_call` gives the 2-D call (input and weight views, `F.conv2d` keywords) and how to turn its
(dense) output back into the 3-D one, or None when neither applies or the views do not exist.
Views are built with explicit strides: a view of one image may carry any stride on its batch axis,
and one that does not order it as channels_last would change the output's layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from .arithmetic import ConvProblem, is_channels_last_like, problem_from_tensors, problem_from_tensors_3d, to_triple


@dataclasses.dataclass(frozen=True)
class PlanarCall:
    """A 3-D convolution as a 2-D one: its operands, `F.conv2d` keywords, and `restore`, which
    views the 2-D output as the 3-D one."""

    input: torch.Tensor
    weight: torch.Tensor
    arguments: dict
    restore: Callable[[torch.Tensor], torch.Tensor]
    flatten: Callable[[torch.Tensor], torch.Tensor]  # restore's inverse, for a dense output-shaped tensor (dY)
    kind: str  # 'slices' (a batch of depth slices) or 'columns' (height and width as one axis)


def planar_call(
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> PlanarCall | None:
    """The 2-D form of a batched `F.conv3d` call whose arguments torch accepts, or None."""
    if input.dim() != 5 or weight.dim() != 5 or input.numel() == 0:
        return None
    (sd, sh, sw), (dd, dh, dw) = to_triple(stride, "stride"), to_triple(dilation, "dilation")
    named = isinstance(padding, str)
    pd, ph, pw = (0, 0, 0) if named else to_triple(padding, "padding")
    t, r, s = weight.shape[2:]
    if t == 1 and pd == 0:
        return _slices(input, weight, (sh, sw), padding if named else (ph, pw), (dh, dw), sd, groups)
    if r == s == 1 and sh == sw == 1 and ph == pw == 0:
        return _columns(input, weight, (sd, 1), padding if named else (pd, 0), (dd, 1), groups)
    return None


def volume_problem(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> tuple[ConvProblem, PlanarCall | None]:
    """(the problem a `conv3d` call with these arguments runs, its planar form): the 2-D problem of
    its views where it is a 2-D convolution, else the 3-D one. The input may be unbatched."""
    planar = planar_call(input if input.dim() == 5 else input.unsqueeze(0), weight, stride, padding, dilation, groups)
    if planar is None:
        return problem_from_tensors_3d(input, weight, bias, stride, padding, dilation, groups), None
    return problem_from_tensors(planar.input, planar.weight, bias, **planar.arguments), planar


def _slices(input, weight, stride, padding, dilation, stride_d: int, groups: int) -> PlanarCall | None:
    """Every `stride_d`-th depth slice as an image of a batch of N*D' (channels_last_3d input only:
    the images are then channels_last, and so is their output, which views back as the
    channels_last_3d one torch gives)."""
    if not is_channels_last_like(input):
        return None
    n, c, _, h, w = input.shape
    slices = input[:, :, ::stride_d]
    depth = slices.shape[2]
    try:
        slices.transpose(1, 2).view(n * depth, c, h, w)
    except RuntimeError:  # batch and depth strides do not nest (a strided view): no such view
        return None
    images = slices.as_strided((n * depth, c, h, w), (slices.stride(2), slices.stride(1), *slices.stride()[3:]))

    def restore(output: torch.Tensor) -> torch.Tensor:  # (N*D', K, P, Q) split into (N, D') and moved behind K
        k, p, q = output.shape[1:]
        s0, s1, s2, s3 = output.stride()
        return output.as_strided((n, k, depth, p, q), (depth * s0, s1, s0, s2, s3))

    def flatten(output: torch.Tensor) -> torch.Tensor:
        _, k, _, p, q = output.shape
        return output.as_strided((n * depth, k, p, q), (output.stride(2), output.stride(1), *output.stride()[3:]))

    arguments = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return PlanarCall(images, weight[:, :, 0], arguments, restore, flatten, "slices")


def _columns(input, weight, stride, padding, dilation, groups: int) -> PlanarCall | None:
    """Height and width as one axis of H*W columns, the kernel (T, 1)."""
    n, c, d, h, w = input.shape
    try:
        input.view(n, c, d, h * w)
    except RuntimeError:  # height and width strides do not nest (a strided view): no such view
        return None
    columns = input.as_strided((n, c, d, h * w), (*input.stride()[:3], input.stride(4)))  # the batch's own stride

    def restore(output: torch.Tensor) -> torch.Tensor:  # (N, K, D', H*W) with its last axis split in two
        s0, s1, s2, s3 = output.stride()
        return output.as_strided((*output.shape[:3], h, w), (s0, s1, s2, w * s3, s3))

    def flatten(output: torch.Tensor) -> torch.Tensor:
        return output.as_strided((*output.shape[:3], h * w), (*output.stride()[:3], output.stride(4)))

    arguments = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return PlanarCall(columns, weight[..., 0], arguments, restore, flatten, "columns")
