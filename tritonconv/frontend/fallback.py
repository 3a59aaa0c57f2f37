"""Serve a convolution with tritonconv when it can, and with torch when it cannot: never crash a model.

Patched modules and the patched `F.conv1d`/`conv2d`/`conv3d` (and transposed) come through here.
A call tritonconv cannot serve (a CPU tensor without the interpreter, an integer or complex dtype,
fp64 on a Triton without fp64 dots, an argument tritonconv refuses) goes to torch's own
convolution instead, is counted, and its reason is logged once (logger `tritonconv`). A call
torch refuses too raises torch's own error, so a patched model fails exactly where an unpatched
one would. `stats()` shows the counts.

Calling `tritonconv.conv2d` directly never falls back: it raises, as an explicit API should.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .. import kernels
from ..plan.prepared import take_route
from ..problem.arithmetic import SUPPORTED_DTYPES
from ..problem.runtime import assume_constant_result, is_interpreted, supports_fp64_dot
from ..problem.torch_reference import TORCH_CONV1D, TORCH_CONV2D, TORCH_CONV3D
from .call_counts import count, count_fallback, count_route, count_traced_fallback, set_compiled_label
from .functional import (
    autocast_dtype_for,
    conv1d,
    conv2d,
    torch_conv2d_with_epilogue,
    torch_conv3d_with_epilogue,
    torch_with_epilogue,
)
from .transposed import (
    TORCH_CONV_TRANSPOSE1D,
    TORCH_CONV_TRANSPOSE2D,
    TORCH_CONV_TRANSPOSE3D,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from .volume import conv3d


def unservable_reason(input: object, weight: object) -> str | None:
    """Why tritonconv cannot take a call with these operands, or None when it can try."""
    if not isinstance(input, torch.Tensor) or not isinstance(weight, torch.Tensor):
        return "an operand is not a tensor"
    return _dtype_device_reason(autocast_dtype_for(input) or input.dtype, input.device.type)


@assume_constant_result  # a traced call reads the answer, never the cache (Dynamo warns on one)
def _dtype_device_reason(dtype: torch.dtype, device: str) -> str | None:
    return _fixed_reason(dtype, device)


@functools.cache
def _fixed_reason(dtype: torch.dtype, device: str) -> str | None:
    """The part of `unservable_reason` fixed for the process by the dtype and device type (the
    interpreter and Triton's version do not change), so a patched model's calls look it up."""
    if dtype not in SUPPORTED_DTYPES:
        return f"dtype {dtype} is not supported (float16, bfloat16, float32, float64 are)"
    if dtype == torch.float64 and not supports_fp64_dot():
        return "float64 needs Triton >= 3.5 (fp64 tl.dot)"
    interpreted = is_interpreted(kernels._conv2d_fwd_implicit_gemm_kernel)
    if device == "cuda" and interpreted:
        return "a CUDA tensor while tritonconv's kernels run in the interpreter (TRITON_INTERPRET=1)"
    if device == "cpu" and not interpreted:
        return "a CPU tensor (tritonconv runs on CUDA; TRITON_INTERPRET=1 runs it on the CPU, slowly)"
    if device not in ("cuda", "cpu"):
        return f"a {device} tensor"
    return None


def serve(op: str, ours: Callable, torchs: Callable, *args, **kwargs) -> torch.Tensor:
    """`ours(*args, **kwargs)` if tritonconv can serve it, else `torchs(...)`, counted either way
    (in a traced graph by the op it traces to: `call_counts`)."""
    reason = unservable_reason(_argument(args, kwargs, 0, "input"), _argument(args, kwargs, 1, "weight"))
    if torch.compiler.is_compiling():  # no try/except around a traced call: the graph's op counts itself
        if reason is not None and count_traced_fallback(op, reason):
            return torchs(*args, **kwargs)
        set_compiled_label(op)
        try:
            return ours(*args, **kwargs)
        finally:
            set_compiled_label("")
    if reason is None:
        take_route()  # forget a route no served call counted (a direct tritonconv call's)
        try:
            output = ours(*args, **kwargs)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
            reason = f"tritonconv refused the call: {type(error).__name__}: {error}"
        else:
            count(op)
            route = take_route()
            if route is not None:
                count_route(op, route)
            return output
    count_fallback(op, reason)
    return torchs(*args, **kwargs)


def _argument(args: tuple, kwargs: dict, index: int, name: str) -> object:
    return args[index] if len(args) > index else kwargs.get(name)


def served_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **epilogue) -> torch.Tensor:
    """`F.conv2d`, served by tritonconv where it can be; `epilogue` (activation, residual,
    negative_slope: what a fused module asks for) is applied by torch's own ops on a fallback."""
    if not epilogue:
        return serve("conv2d", conv2d, TORCH_CONV2D, input, weight, bias, stride, padding, dilation, groups)
    return serve("conv2d", conv2d, torch_conv2d_with_epilogue, input, weight, bias, stride, padding, dilation, groups,
                 **epilogue)  # fmt: skip


def served_conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """`F.conv1d`, served by tritonconv where it can be."""
    return serve("conv1d", conv1d, TORCH_CONV1D, input, weight, bias, stride, padding, dilation, groups)


def served_conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **epilogue) -> torch.Tensor:
    """`F.conv3d`, served by tritonconv where it can be; `epilogue` as `served_conv2d`'s."""
    if not epilogue:
        return serve("conv3d", conv3d, TORCH_CONV3D, input, weight, bias, stride, padding, dilation, groups)
    return serve("conv3d", conv3d, torch_conv3d_with_epilogue, input, weight, bias, stride, padding, dilation, groups,
                 **epilogue)  # fmt: skip


def _served_transposed(op: str, ours: Callable, torchs: Callable) -> Callable[..., torch.Tensor]:
    """`F.<op>` for a transposed convolution, served by tritonconv where it can be; `epilogue` as
    `served_conv2d`'s (torch's unfused form on a fallback)."""
    unfused = torch_with_epilogue(torchs)

    def served(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, **epilogue):
        return serve(op, ours, unfused if epilogue else torchs, input, weight, bias, stride, padding, output_padding,
                     groups, dilation, **epilogue)  # fmt: skip

    served.__name__ = served.__qualname__ = f"served_{op}"
    served.__doc__ = f"`F.{op}`, served by tritonconv where it can be; `epilogue` as `served_conv2d`'s."
    return served


served_conv_transpose2d = _served_transposed("conv_transpose2d", conv_transpose2d, TORCH_CONV_TRANSPOSE2D)
served_conv_transpose1d = _served_transposed("conv_transpose1d", conv_transpose1d, TORCH_CONV_TRANSPOSE1D)
served_conv_transpose3d = _served_transposed("conv_transpose3d", conv_transpose3d, TORCH_CONV_TRANSPOSE3D)


# Where torch keeps each functional convolution, and tritonconv's served form of it with torch's
# own: what `patch_torch()` and the routing of a module's calls (`routing.py`) swap.
FUNCTIONAL_CONVS = tuple(
    (owner, name, served, original)
    for owner in (torch.nn.functional, torch)
    for name, served, original in (
        ("conv2d", served_conv2d, TORCH_CONV2D),
        ("conv1d", served_conv1d, TORCH_CONV1D),
        ("conv3d", served_conv3d, TORCH_CONV3D),
        ("conv_transpose2d", served_conv_transpose2d, TORCH_CONV_TRANSPOSE2D),
        ("conv_transpose1d", served_conv_transpose1d, TORCH_CONV_TRANSPOSE1D),
        ("conv_transpose3d", served_conv_transpose3d, TORCH_CONV_TRANSPOSE3D),
    )
)
