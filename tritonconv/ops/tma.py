"""Prepare the TMA-fed stride-1 kernels' launches: the forward and the input gradient (one kernel,
`kernels/tma_fwd.py`, roles swapped for dX) and the weight gradient (`kernels/tma_wgrad.py`); or
the pointer kernels' where descriptors cannot address the call's tensors.

Descriptors need dense NHWC activations and a dense channels_last weight (read as its tap-major
[K, R*S, C] view), rows 16-byte aligned (channels a multiple of 8 in 16-bit dtypes), and a GPU with
TMA (Hopper on) or the interpreter. Anything else (an NCHW weight, a strided view, an older GPU) is
served by the general kernel of the pass at the same config, so the route is always correct.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import ConvProblem, cdiv, next_power_of_2
from ..problem.config import KernelConfig
from . import dgrad, implicit_gemm, wgrad
from .common import ForwardChunk, LaunchFlags, epilogue_flags, forward_pointers, geometry, needs_int64
from .descriptors import aligned, dense_nhwc, descriptors_usable, rebased, tensor_descriptor
from .epilogue import NO_EPILOGUE, Epilogue
from .launch import KernelLaunch

LARGEST_BOX_WIDTH = 16


def box_shape(p: int, q: int, block_m: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_Q): output rows by columns of the M tile, as wide as the output (up to 16)
    and no taller than it."""
    block_q = min(next_power_of_2(q), LARGEST_BOX_WIDTH, block_m)
    return min(block_m // block_q, next_power_of_2(p)), block_q


def _nhwc(tensor: torch.Tensor) -> torch.Tensor | None:
    """A dense channels_last activation as its [N, H, W, C] view, if a descriptor can address it."""
    view = dense_nhwc(tensor)
    return view if view is not None and aligned(view) else None


def _tap_major(weight: torch.Tensor) -> torch.Tensor | None:
    """A dense channels_last weight as its [K, R*S, C] view, if a descriptor can address it."""
    k, c, r, s = weight.shape
    if weight.stride() != (r * s * c, 1, s * c, c):
        return None
    view = weight.permute(0, 2, 3, 1).reshape(k, r * s, c)
    return view if aligned(view) else None


def _views(source: torch.Tensor, other: torch.Tensor, problem: ConvProblem, weight_like: bool = True) -> tuple | None:
    """The descriptors' views of an activation and of the weight (or, for the weight gradient, of a
    second activation: dY), or None where descriptors cannot address them."""
    if problem.stride != (1, 1) or problem.groups != 1 or source.element_size() not in (2, 4):
        return None
    if not descriptors_usable(source.device, kernels._conv2d_fwd_tma_kernel):
        return None
    views = _nhwc(source), (_tap_major(other) if weight_like else _nhwc(other))
    return None if None in views else views


def _descriptor_launch(
    source_view: torch.Tensor, weight_view: torch.Tensor, output: torch.Tensor, bias: torch.Tensor | None,
    problem: ConvProblem, config: KernelConfig, flags: LaunchFlags, epilogue: Epilogue, transposed: bool,
) -> tuple[KernelLaunch, object, object]:  # fmt: skip
    """The kernel's launch computing `output` ([N, channels, P, Q], any strides) from the source's
    boxes, and the two descriptors it reads."""
    n, channels, p, q = output.shape
    block_p, block_q = box_shape(p, q, config.block_m)
    weight_box = [config.block_k, 1, config.block_n] if transposed else [config.block_n, 1, config.block_k]
    source_desc = tensor_descriptor().from_tensor(source_view, [1, block_p, block_q, config.block_k])
    weight_desc = tensor_descriptor().from_tensor(weight_view, weight_box)
    boxes = n * cdiv(p, block_p) * cdiv(q, block_q)
    launch = KernelLaunch(
        kernels._conv2d_fwd_tma_kernel,
        (boxes * cdiv(channels, config.block_n),),
        (n, p, q, channels, 0 if bias is None else bias.stride(0), output.stride(), epilogue.residual_strides()),
        {
            "C": source_view.shape[-1],
            "GEOMETRY": geometry(problem),
            "TRANSPOSED": transposed,
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "NUMERICS": flags.numerics,
            "BLOCK_P": block_p,
            "BLOCK_Q": block_q,
            "BLOCK_N": config.block_n,
            "BLOCK_K": config.block_k,
            "GROUP_M": config.group_m,
            **config.options(),
        },
    )  # fmt: skip
    return launch, source_desc, weight_desc


def prepare(chunk: ForwardChunk) -> Callable[..., None]:
    """The forward's launch, taking (x, weight, bias, y, residual, z)."""
    x, weight, bias, y, problem, config, flags, epilogue = chunk
    views = _views(x, weight, problem)
    if views is None:
        return implicit_gemm.prepare(chunk)
    launch, x_desc, w_desc = _descriptor_launch(*views, y, bias, problem, config, flags, epilogue, transposed=False)

    def through_descriptors(x, weight, bias, y, residual, z) -> None:
        launch(rebased(x_desc, x), rebased(w_desc, weight), bias, y, residual, z)

    return through_descriptors


def prepare_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> Callable[..., None]:  # fmt: skip
    """The stride-1 input gradient's launch, taking (grad_output, weight, grad_input) and, for a
    transposed convolution's forward, its (bias, residual, preactivation): the forward kernel with
    dY as its input and the taps reversed, the epilogue in its tail."""
    views = _views(grad_output, weight, problem)
    if views is None:
        return dgrad.prepare_masking(grad_output, weight, grad_input, problem, config, bias, epilogue)
    index_64 = needs_int64(grad_output, weight, grad_input, *epilogue.tensors())
    flags = LaunchFlags.for_call(grad_output.dtype, kernels._conv2d_fwd_tma_kernel, index_64, True)
    launch, dy_desc, w_desc = _descriptor_launch(*views, grad_input, bias, problem, config, flags, epilogue,
                                                 transposed=True)  # fmt: skip

    def through_descriptors(grad_output, weight, grad_input, bias=None, residual=None, preactivation=None) -> None:
        pointers = forward_pointers(grad_output, weight, bias, grad_input, residual, preactivation)
        launch(rebased(dy_desc, grad_output), rebased(w_desc, weight), *pointers[2:])

    return through_descriptors


def prepare_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, grad_bias: torch.Tensor | None = None,
) -> Callable[..., None]:  # fmt: skip
    """The stride-1 weight gradient's launches, taking (input, grad_output, grad_weight) or, with
    `grad_bias`, (input, grad_output, grad_weight, grad_bias): block_m of K by block_n of C at one
    tap per program, the output-pixel boxes (block_k pixels each) split `split_k` ways and summed in
    order; the bias gradient summed from the same dY boxes."""
    views = _views(input, grad_output, problem, weight_like=False)
    if views is None:
        return _pointer_wgrad(input, grad_output, grad_weight, problem, config, grad_bias)
    x_view, dy_view = views
    block_p, block_q = box_shape(problem.p, problem.q, config.block_k)
    x_desc = tensor_descriptor().from_tensor(x_view, [1, block_p, block_q, config.block_n])
    dy_desc = tensor_descriptor().from_tensor(dy_view, [1, block_p, block_q, config.block_m])
    boxes = problem.n * cdiv(problem.p, block_p) * cdiv(problem.q, block_q)
    row = grad_weight.numel() + (problem.k if grad_bias is not None else 0)
    workspace_limit = (2**31 - 1) // row  # the workspace's split offsets stay 32-bit
    chunk = cdiv(boxes, max(1, min(config.split_k, boxes, workspace_limit)))
    split = cdiv(boxes, chunk)
    tiles = cdiv(problem.k, config.block_m) * problem.r * problem.s * cdiv(problem.c, config.block_n)
    flags = LaunchFlags.for_call(input.dtype, kernels._conv2d_wgrad_tma_kernel, False, True)

    def partial_launch(out_strides: tuple[int, ...], bias_strides: tuple[int, int, int] | None = None) -> Callable:
        launch = KernelLaunch(
            kernels._conv2d_wgrad_tma_kernel,
            (tiles, split),
            (problem.p, problem.q, boxes, chunk, tuple(out_strides), *(bias_strides or (0, 0, 0))),
            {
                "K": problem.k,
                "C": problem.c,
                "GEOMETRY": geometry(problem),
                "HAS_BIAS": bias_strides is not None,
                "NUMERICS": flags.numerics,
                "BLOCK_M": config.block_m,
                "BLOCK_N": config.block_n,
                "BLOCK_P": block_p,
                "BLOCK_Q": block_q,
                **config.options(),
            },
        )  # fmt: skip

        def run(input, grad_output, out, bias_out=None) -> None:
            launch(rebased(x_desc, input), rebased(dy_desc, grad_output), out, out if bias_out is None else bias_out)

        return run

    return wgrad.split_or_direct(partial_launch, split, grad_weight, problem, grad_bias)


def _pointer_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, grad_bias: torch.Tensor | None,
) -> Callable[..., None]:  # fmt: skip
    """The pointer kernels' weight gradient (and bias gradient, its own reduction) for tensors no
    descriptor can address, taking what `prepare_wgrad`'s run takes."""
    weight_run = wgrad.prepare_split_k(input, grad_output, grad_weight, problem, config)
    if grad_bias is None:
        return weight_run
    bias_run = wgrad.prepare_bias_grad(grad_output, grad_bias)

    def both(input, grad_output, grad_weight, grad_bias) -> None:
        weight_run(input, grad_output, grad_weight)
        bias_run(grad_output, grad_bias)

    return both
