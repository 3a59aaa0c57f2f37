"""Input-gradient launches, one `prepare_*` per route; each returns `run(grad_output, weight,
grad_input, bias=None, residual=None, preactivation=None)`.

- masking: the general kernel over all N*H*W input pixels, taps that no output reaches masked;
- stride phase: input pixels with h = ph (mod stride) all take the same taps, so each program
  takes one phase (grid axis 1), skips the taps that cannot reach it and walks the kept ones;
- conv1x1: a stride-1 1x1 convolution's input gradient is a 1x1 convolution of dY with the
  transposed weight (a strided view, no copy), run by the conv1x1 GEMM kernel;
- depthwise: a stride-1, multiplier-1 depthwise convolution's input gradient is a depthwise
  convolution of dY with the spatially flipped weight (read flipped, no copy), padded
  dil*(k-1) - pad on each side, run by the depthwise forward kernel.

A gradient is prepared without `bias` and `epilogue`. A transposed convolution's forward is this
pass (its output is dX), and prepares it with its bias and fused epilogue (`ops/epilogue.py`: a
residual, the pre-activation kept, an activation), which every route applies before its store,
as the forward kernels do; its run then takes the bias, residual and pre-activation tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import CHANNELS_LAST, CONTIGUOUS, ConvProblem, cdiv, dgrad_as_conv1x1, dgrad_as_depthwise
from ..problem.arithmetic import is_channels_last_like as channels_last
from ..problem.config import KernelConfig
from . import conv1x1, depthwise
from .common import LaunchFlags, epilogue_flags, forward_pointers, forward_strides, geometry, needs_int64
from .epilogue import NO_EPILOGUE, Epilogue
from .forward import ForwardRun, prepare_forward
from .launch import KernelLaunch

DgradRun = Callable[..., None]  # run(grad_output, weight, grad_input, bias=None, residual=None, preactivation=None)


def prepare_masking(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> DgradRun:  # fmt: skip
    return _prepare_general(kernels._conv2d_dgrad_kernel, 1, problem.h, problem.w, grad_output, weight, grad_input,
                            problem, config, bias, epilogue)  # fmt: skip


def prepare_phased(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> DgradRun:  # fmt: skip
    (stride_h, stride_w), phases = problem.stride, problem.stride[0] * problem.stride[1]
    rows, columns = cdiv(problem.h, stride_h), cdiv(problem.w, stride_w)
    return _prepare_general(kernels._conv2d_dgrad_phased_kernel, phases, rows, columns, grad_output, weight, grad_input,
                            problem, config, bias, epilogue)  # fmt: skip


def _prepare_general(
    kernel: object, phases: int, rows: int, columns: int, grad_output: torch.Tensor, weight: torch.Tensor,
    grad_input: torch.Tensor, problem: ConvProblem, config: KernelConfig, bias: torch.Tensor | None,
    epilogue: Epilogue,
) -> DgradRun:  # fmt: skip
    """The masking and phased kernels take the same arguments; only the masking kernel orders its
    reduction by layout (CHANNELS_INNER): the phased one's addresses suit any layout."""
    m = problem.n * rows * columns
    index_64 = needs_int64(grad_output, weight, grad_input, *epilogue.tensors()) or m > 2**31 - 1 - config.block_m
    flags = LaunchFlags.for_call(grad_output.dtype, kernel, index_64, channels_last(grad_output))
    layout = {"CHANNELS_INNER": flags.channels_inner} if phases == 1 else {}
    tiles = cdiv(m, config.block_m) * cdiv(problem.c_per_group, config.block_n)
    launch = KernelLaunch(
        kernel,
        (problem.groups * tiles, phases),
        (problem.n, problem.h, problem.w, problem.p, problem.q, problem.c_per_group,
         *forward_strides(grad_output, weight.stride(), bias, grad_input, epilogue)),
        {
            "K_PER_GROUP": problem.k_per_group,
            "GEOMETRY": geometry(problem),
            "GROUPS": problem.groups,
            **layout,
            "EPILOGUE": epilogue_flags(bias, epilogue),
            "NUMERICS": flags.numerics,
            **config.gemm_kwargs(),
        },
    )  # fmt: skip
    return dgrad_run(launch)


def dgrad_run(launch: KernelLaunch) -> DgradRun:
    """A dgrad kernel's run over its launch of the forward kernels' six pointers (dY and the weight
    in the input's and weight's places, dX in the output's)."""

    def run(grad_output, weight, grad_input, bias=None, residual=None, preactivation=None) -> None:
        launch(*forward_pointers(grad_output, weight, bias, grad_input, residual, preactivation))

    return run


def as_dgrad_run(forward_run: ForwardRun) -> DgradRun:
    """A dgrad route served by a forward kernel (on dY): its `run(x, weight, bias, y, residual, z)`
    taking a dgrad run's arguments."""

    def run(grad_output, weight, grad_input, bias=None, residual=None, preactivation=None) -> None:
        forward_run(grad_output, weight, bias, grad_input, residual, preactivation)

    return run


def prepare_conv1x1_route(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> DgradRun:  # fmt: skip
    transposed = dgrad_as_conv1x1(problem, _layout(grad_input))
    run = prepare_forward(conv1x1.prepare, grad_output, weight.transpose(0, 1), bias, grad_input, transposed, config,
                          epilogue)  # fmt: skip
    # The transposed weight is a view of the same memory: later calls pass the weight itself.
    return as_dgrad_run(run)


def prepare_depthwise_route(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig, bias: torch.Tensor | None = None, epilogue: Epilogue = NO_EPILOGUE,
) -> DgradRun:  # fmt: skip
    return prepare_flipped_forward(depthwise.prepare, grad_output, weight, grad_input, problem, config, bias, epilogue)


def prepare_flipped_forward(
    prepare_variant: Callable, grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor,
    problem: ConvProblem, config: KernelConfig, bias: torch.Tensor | None, epilogue: Epilogue,
) -> DgradRun:  # fmt: skip
    """A stride-1, multiplier-1 depthwise convolution's input gradient as a depthwise forward variant
    (`prepare_variant`, which takes `flip_taps`) on dY with the weight read back to front and the
    padding mirrored (`arithmetic.dgrad_as_depthwise`)."""
    flipped = dgrad_as_depthwise(problem, _layout(grad_input))
    run = prepare_forward(prepare_variant, grad_output, weight, bias, grad_input, flipped, config, epilogue,
                          flip_taps=True)  # fmt: skip
    return as_dgrad_run(run)


def _layout(tensor: torch.Tensor) -> str:
    return CHANNELS_LAST if channels_last(tensor) else CONTIGUOUS
