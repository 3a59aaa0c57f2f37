"""tritonconv as aten's convolution: `use_aten()` registers tritonconv's kernels as the CUDA (and,
under the Triton interpreter, the CPU) implementation of `aten::convolution` and
`aten::convolution_backward`, the two operators every convolution in torch reaches.

Above them torch keeps doing its own work: `F.conv2d` and friends (unbatching, 'same' padding),
autograd (whose formulas call `convolution_backward`, and `convolution` again for double backward
and forward-mode AD), vmap's batching rule, `torch.nn.grad.conv*_input`/`_weight`, C++ callers,
and the aten calls of graphs that `torch.compile` and `torch.export` produce. So with no patch to
a model, all of those run tritonconv's kernels. A kernel registered at a backend key runs below
autograd, so it computes and never builds a graph: it takes the direct passes (`direct.py`) and
the transposed prepared calls, never an autograd Function.

A call tritonconv cannot serve (an unsupported dtype such as complex, a device its kernels do not
run on, an argument it refuses) goes to the kernel torch had registered before (fetched with
`torch.library.get_kernel`), and so does every convolution tritonconv itself asks torch for while
it serves one (its argument checks run torch's function on data-free stand-ins) or through its
`torch` route (`ops/torch_conv.py`) from any entry point. `stats()` counts
both, under 'aten.convolution' and 'aten.convolution_backward'.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import torch

from .. import kernels
from ..ops.torch_conv import in_torch_kernels, redirect_aten, torch_kernels
from ..plan.direct import Geometry, bias_grad_of, forward_of, input_grad_of, weight_grad_of
from ..problem.arithmetic import hashable, is_channels_last_like
from ..problem.runtime import is_interpreted
from .fallback import serve
from .transposed import TORCH_CONV_TRANSPOSE2D, TORCH_CONV_TRANSPOSE3D, transposed_call

OPERATORS = ("convolution", "convolution_backward")
_library: torch.library.Library | None = None


def aten_enabled() -> bool:
    """True while tritonconv serves aten's convolutions."""
    return _library is not None


def enable_aten() -> None:
    """Serve `aten::convolution` and `aten::convolution_backward` with tritonconv from now on, for
    CUDA tensors, and for CPU tensors when the kernels run in the Triton interpreter."""
    global _library
    if _library is not None:
        return
    if not hasattr(torch.library, "get_kernel"):
        raise RuntimeError(f"tritonconv.use_aten needs torch.library.get_kernel, which torch {torch.__version__} lacks")
    _untraceable()
    library = torch.library.Library("aten", "IMPL")
    for key in _dispatch_keys():
        for name, implementation in zip(OPERATORS, (_convolution, _convolution_backward), strict=True):
            torch_kernel = torch.library.get_kernel(f"aten::{name}", key)
            library.impl(name, functools.partial(implementation, torch_kernel), key, with_keyset=True)
    _library = library
    redirect_aten(True)


def disable_aten() -> None:
    """Give aten's convolutions back to torch's own kernels."""
    global _library
    if _library is not None:
        _library._destroy()
        _library = None
        redirect_aten(False)


@contextlib.contextmanager
def use_aten() -> Iterator[None]:
    """Within this block, tritonconv is aten's convolution (`enable_aten`); afterwards it is torch's
    again, unless it was enabled before the block."""
    was_enabled = aten_enabled()
    enable_aten()
    try:
        yield
    finally:
        if not was_enabled:
            disable_aten()


def _dispatch_keys() -> tuple[str, ...]:
    return ("CUDA", "CPU") if is_interpreted(kernels._conv2d_fwd_implicit_gemm_kernel) else ("CUDA",)


def _serve_call(op: str, torch_kernel, keyset, ours: Callable, *arguments) -> object:
    torchs = functools.partial(torch_kernel.call_boxed, keyset)
    if in_torch_kernels():  # asked for by tritonconv itself: its torch route, its checks
        return torchs(*arguments)

    def guarded(*arguments):
        with torch_kernels():
            return ours(*arguments)

    return serve(op, guarded, torchs, *arguments)


# What the registered kernels call: `_serve_call` wrapped by `torch.compiler.disable` (a compiled graph's
# extern call lands here: Dynamo must not trace the launchers) when aten is first enabled, not at import,
# where the wrapper would import torch._dynamo for every user of tritonconv.
_served: Callable[..., object] = _serve_call


def _untraceable() -> None:
    global _served
    if _served is _serve_call:
        _served = torch.compiler.disable(_serve_call)


def _convolution(torch_kernel, keyset, input, weight, bias, stride, padding, dilation, transposed, output_padding,
                 groups):  # fmt: skip
    return _served("aten.convolution", torch_kernel, keyset, _forward, input, weight, bias, stride, padding,
                   dilation, transposed, output_padding, groups)  # fmt: skip


def _convolution_backward(torch_kernel, keyset, grad_output, input, weight, bias_sizes, stride, padding, dilation,
                          transposed, output_padding, groups, output_mask):  # fmt: skip
    return _served("aten.convolution_backward", torch_kernel, keyset, _backward, grad_output, input, weight,
                   bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask)  # fmt: skip


def _as_served(input: torch.Tensor, weight: torch.Tensor, *geometry: Sequence[int]) -> tuple[bool, tuple]:
    """(whether the call is 1-D, its operands and (stride, padding, dilation, output_padding)), a 1-D
    call as the 2-D one with H = 1: (N, C, 1, L) views; refuses what no route serves."""
    axes = weight.dim() - 2
    if axes not in (1, 2, 3) or input.dim() != weight.dim():
        raise ValueError(f"tritonconv serves batched 1-D, 2-D and 3-D convolutions; got input {list(input.shape)}")
    if axes != 1:
        return False, (input, weight, *geometry)
    lifted = ((first, *value) for first, value in zip((1, 0, 1, 0), geometry, strict=True))
    return True, (input.unsqueeze(-2), weight.unsqueeze(-2), *lifted)


def _forward(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups) -> torch.Tensor:
    one_dimensional, (input, weight, stride, padding, dilation, output_padding) = _as_served(
        input, weight, stride, padding, dilation, output_padding
    )
    if transposed:
        call = _transposed_call(input, weight, bias, stride, padding, dilation, output_padding, groups)
        output = call.forward(input, weight, bias)
    else:
        output = forward_of(input, weight, bias, Geometry.of(stride, padding, dilation, groups, one_dimensional))
    return output.squeeze(-2).contiguous() if one_dimensional else output


def _transposed_call(input, weight, bias, stride, padding, dilation, output_padding, groups):
    """The prepared call of a 2-D or 3-D transposed convolution (`transposed.transposed_call`)."""
    torch_function = TORCH_CONV_TRANSPOSE3D if weight.dim() == 5 else TORCH_CONV_TRANSPOSE2D
    geometry = tuple(hashable(a) for a in (stride, padding, output_padding, groups, dilation))
    return transposed_call(torch_function, weight.dim() - 2, input, weight, bias, geometry)


def _backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups,
              output_mask) -> tuple:  # fmt: skip
    """(dX, dW, db) where `output_mask` asks for them, None elsewhere, as aten's kernel returns them."""
    one_dimensional, (input, weight, stride, padding, dilation, output_padding) = _as_served(
        input, weight, stride, padding, dilation, output_padding
    )
    if one_dimensional:
        grad_output = grad_output.unsqueeze(-2)
    wants_input, wants_weight, wants_bias = output_mask
    if transposed:
        call = _transposed_call(input, weight, None, stride, padding, dilation, output_padding, groups)
        prepared = call.prepared
        grad_input = call.input_grad(grad_output, weight, input.shape, prepared) if wants_input else None
        grad_weight = prepared.weight_grad(grad_output, call.padded(input)) if wants_weight else None
    else:
        geometry = Geometry.of(stride, padding, dilation, groups)
        grad_input = input_grad_of(grad_output, weight, geometry, input.shape, is_channels_last_like(input)) \
            if wants_input else None  # fmt: skip
        grad_weight = weight_grad_of(input, grad_output, geometry, weight.shape, is_channels_last_like(weight)) \
            if wants_weight else None  # fmt: skip
    grad_bias = bias_grad_of(grad_output) if wants_bias else None
    if one_dimensional:
        grad_input = None if grad_input is None else grad_input.squeeze(-2)
        grad_weight = None if grad_weight is None else grad_weight.squeeze(-2)
    return grad_input, grad_weight, grad_bias
