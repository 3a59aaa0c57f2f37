"""torch's own convolutions, as they were when tritonconv was first imported: what tritonconv falls
back on, records through and checks against, even while `tritonconv.patch_torch()` has routed
F.conv2d/conv1d to tritonconv; and `check_like_torch`, which raises torch's own argument errors. In
a module of its own so every layer can read them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Tolerances are bounds, not guesses. With T the sum of |terms| per output element (the pass run on
# |operands|) and L its reduction length, an element may be off by
#     SAFETY * (out_eps * |ref| + (in_eps + L * acc_eps) * T)
# out_eps covers rounding the fp32 accumulator to the output dtype, in_eps the rounding of operands
# the tensor cores see (TF32 truncates both operands), L * acc_eps the worst-case growth of the fp32
# (or fp64) accumulation. A wrong tap, channel or mask is off by a whole term, far above this.
# dtype -> (out_eps, in_eps, acc_eps); "tf32" is fp32 as the tensor cores multiply it.
EPSILONS = {
    torch.float64: (2.0**-52, 2.0**-52, 2.0**-53),
    torch.float32: (2.0**-23, 2.0**-23, 2.0**-24),
    "tf32": (2.0**-23, 2.0**-9, 2.0**-24),
    torch.float16: (2.0**-10, 0.0, 2.0**-24),
    # One bf16 ulp, not half: the Triton interpreter truncates f32 -> bf16 instead of rounding.
    torch.bfloat16: (2.0**-7, 0.0, 2.0**-24),
}
SAFETY = 2.0


def error_bound(expected: torch.Tensor, magnitude: torch.Tensor, precision: torch.dtype | str, length: int):
    """The largest error each element of a result may show (the bound above), for `precision` (a
    dtype, or "tf32") and reduction length `length`."""
    out_eps, in_eps, acc_eps = EPSILONS[precision]
    return SAFETY * (out_eps * expected.abs() + (in_eps + length * acc_eps) * magnitude)


TORCH_CONV2D = F.conv2d
TORCH_CONV1D = F.conv1d
TORCH_CONV3D = F.conv3d


def check_like_torch(
    torch_function, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: tuple,
    batched_dim: int = 4,
) -> None:  # fmt: skip
    """Raise exactly what `torch_function` raises for these arguments, without computing anything.

    torch's meta kernels skip most argument checks, so the checks run on CPU stand-ins that hold no
    data (a scalar expanded to each shape): first with an empty batch, which computes nothing; only
    if that raises, again with the call's own shapes, which raises the same error naming them."""
    if len({t.device for t in (input, weight, bias) if t is not None}) > 1:
        torch_function(input, weight, bias, *geometry)  # torch's device error, raised before any work

    def stand_in(tensor: torch.Tensor | None, shape: tuple | None = None) -> torch.Tensor | None:
        if tensor is None:
            return None
        return torch.zeros((), dtype=tensor.dtype).expand(tensor.shape if shape is None else shape)

    empty_batch = (0, *input.shape[1:]) if input.dim() == batched_dim else (0, *input.shape)
    known_rank = input.dim() in (batched_dim - 1, batched_dim)
    try:
        torch_function(stand_in(input, empty_batch if known_rank else None), stand_in(weight), stand_in(bias),
                       *geometry)  # fmt: skip
    except Exception:
        torch_function(stand_in(input), stand_in(weight), stand_in(bias), *geometry)
        raise
    if known_rank and 0 in input.shape[2 - batched_dim :]:  # an empty image: torch's verdict (it computes nothing)
        torch_function(stand_in(input), stand_in(weight), stand_in(bias), *geometry)
