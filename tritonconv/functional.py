"""Public functional API with `torch.nn.functional` semantics."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .arithmetic import problem_from_tensors
from .ops import conv2d_fwd


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """2-D convolution computed by Triton kernels, with exactly `torch.nn.functional.conv2d`'s semantics.

    Accepts batched (N, C, H, W) and unbatched (C, H, W) inputs, NCHW, channels_last or any strided
    view (read in place, never copied), `padding='same'|'valid'`, and fp16, bf16, fp32 (TF32 when
    `torch.backends.cudnn.allow_tf32` is set) and fp64. The output has the memory format torch gives it.
    """
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias)):
        raise RuntimeError(
            "tritonconv.conv2d has no backward yet (forward only in this release); "
            "call it under torch.no_grad() or on tensors that do not require grad"
        )
    problem = problem_from_tensors(input, weight, bias, stride, padding, dilation, groups)
    batched = input.dim() == 4
    output = conv2d_fwd(input if batched else input.unsqueeze(0), weight, bias, problem)
    return output if batched else output.squeeze(0)
