"""Weight- and bias-gradient launches. `prepare_split_k` and `prepare_depthwise` return
`run(input, grad_output, grad_weight)`, `prepare_bias_grad` returns `run(grad_output, grad_bias)`.

Weight gradients reduce over all N*P*Q output pixels. The reduction is cut into chunks; each chunk's
partial dW goes to its own row of an fp32 (fp64 for fp64) workspace, and one kernel then adds the
rows in index order, so the result does not depend on which program finished first. With one chunk
the partial kernel writes dW itself, and no workspace or second kernel is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import ConvProblem, cdiv, next_power_of_2
from ..problem.arithmetic import is_channels_last_like as channels_last
from ..problem.config import KernelConfig
from .common import LaunchFlags, elementwise_numerics, geometry, needs_int64
from .launch import KernelLaunch

SUM_BLOCK = 1024
WgradRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def split_reduction(reduction: int, numel: int, split_k: int, block: int) -> tuple[int, int]:
    """(splits, chunk): at most `split_k` chunks of whole `block`s, and a workspace whose split
    stride stays within 32-bit offsets."""
    split = max(1, min(split_k, (2**31 - 1) // numel))
    chunk = cdiv(cdiv(reduction, split), block) * block
    return cdiv(reduction, chunk), chunk


def prepare_split_k(
    input: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> WgradRun:  # fmt: skip
    """The general weight gradient: M = K/g, N = (C/g)*R*S, the N*P*Q reduction split `split_k` ways."""
    reduction = problem.n * problem.p * problem.q
    split, chunk = split_reduction(reduction, grad_weight.numel(), config.split_k, config.block_k)
    tiles = cdiv(problem.k_per_group, config.block_m) * cdiv(problem.gemm_k, config.block_n)
    index_64 = needs_int64(input, grad_output) or reduction > 2**31 - 1 - config.block_k
    flags = LaunchFlags.for_call(input.dtype, kernels._conv2d_wgrad_partial_kernel, index_64, channels_last(input))

    def partial_launch(out_strides: tuple[int, ...]) -> KernelLaunch:
        return KernelLaunch(
            kernels._conv2d_wgrad_partial_kernel,
            (problem.groups * tiles, split),
            (problem.n, problem.h, problem.w, problem.p, problem.q, problem.k_per_group, chunk,
             input.stride(), grad_output.stride(), tuple(out_strides)),
            {
                "C_PER_GROUP": problem.c_per_group,
                "GEOMETRY": geometry(problem),
                "GROUPS": problem.groups,
                "TAP_MAJOR": problem.c_per_group % config.block_n == 0,
                "CHANNELS_INNER": flags.channels_inner,
                "NUMERICS": flags.numerics,
                "BLOCK_M": config.block_m,
                "BLOCK_N": config.block_n,
                "BLOCK_K": config.block_k,
                **config.options(),
            },
        )  # fmt: skip

    return split_or_direct(partial_launch, split, grad_weight, problem)


def prepare_depthwise(
    input: torch.Tensor, grad_output: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> WgradRun:  # fmt: skip
    """Depthwise weight gradient without tl.dot: dY times the tap-shifted input, elementwise, summed
    over pixels, BLOCK_N channels of one tap per program, the pixels split `split_k` ways."""
    reduction = problem.n * problem.p * problem.q
    split, chunk = split_reduction(reduction, grad_weight.numel(), config.split_k, config.block_m)
    index_64 = needs_int64(input, grad_output) or reduction > 2**31 - 1 - config.block_m

    def partial_launch(out_strides: tuple[int, ...]) -> KernelLaunch:
        return KernelLaunch(
            kernels._conv2d_wgrad_depthwise_kernel,
            (cdiv(problem.k, config.block_n), problem.r * problem.s, split),
            (problem.n, problem.h, problem.w, problem.p, problem.q, problem.k, chunk,
             input.stride(), grad_output.stride(), tuple(out_strides)),
            {
                "MULTIPLIER": problem.k_per_group,
                "GEOMETRY": geometry(problem),
                "NUMERICS": elementwise_numerics(index_64, input.dtype),
                "BLOCK_M": config.block_m,
                "BLOCK_N": config.block_n,
                "num_warps": config.num_warps,
            },
        )  # fmt: skip

    return split_or_direct(partial_launch, split, grad_weight, problem)


def split_or_direct(
    partial_launch: Callable[..., Callable[..., None]], split: int, grad_weight: torch.Tensor, problem: ConvProblem,
    grad_bias: torch.Tensor | None = None,
) -> WgradRun:  # fmt: skip
    """With one chunk, the partial kernel stores dW itself (its dtype, through its strides): one
    launch and no workspace. Otherwise it fills a [split, K, C/g, R, S] workspace that the ordered
    sum reduces into dW.

    With `grad_bias` (a partial kernel that sums the bias gradient as it goes), `partial_launch`
    also takes db's (offset, split stride, stride): db itself, or K more columns of each workspace
    row, which the same ordered sum finishes; the run then takes (input, grad_output, grad_weight,
    grad_bias)."""
    fused = grad_bias is not None
    if split == 1:
        if fused:
            return partial_launch((0, *grad_weight.stride()), (0, 0, grad_bias.stride(0)))
        direct = partial_launch((0, *grad_weight.stride()))
        return lambda input, grad_output, grad_weight: direct(input, grad_output, grad_weight)
    numel = grad_weight.numel()
    bias_numel = problem.k if fused else 0
    row = numel + bias_numel
    acc_dtype = torch.float64 if grad_weight.dtype == torch.float64 else torch.float32
    c, r, s = problem.c_per_group, problem.r, problem.s
    workspace_strides = (row, c * r * s, r * s, s, 1)
    partials = partial_launch(workspace_strides, (numel, row, 1)) if fused else partial_launch(workspace_strides)
    summed = KernelLaunch(
        kernels._sum_splits_kernel,
        (cdiv(row, SUM_BLOCK),),
        (split, numel, bias_numel, row, grad_weight.stride(), grad_bias.stride(0) if fused else 0),
        {"C_PER_GROUP": c, "R": r, "S": s, "BLOCK": SUM_BLOCK},
    )

    def run(input, grad_output, grad_weight) -> None:
        workspace = torch.empty((split, row), dtype=acc_dtype, device=grad_weight.device)
        partials(input, grad_output, workspace)
        summed(workspace, grad_weight, grad_weight)

    def run_with_bias(input, grad_output, grad_weight, grad_bias) -> None:
        workspace = torch.empty((split, row), dtype=acc_dtype, device=grad_weight.device)
        partials(input, grad_output, workspace, workspace)
        summed(workspace, grad_weight, grad_bias)

    return run_with_bias if fused else run


def bias_grad_operand(grad_output: torch.Tensor) -> torch.Tensor:
    """dY as the 4-D tensor the bias reduction reads: a 3-D convolution's with its depth and height
    as one axis (a view in both layouts)."""
    return grad_output.flatten(2, 3) if grad_output.dim() == 5 else grad_output


def prepare_bias_grad(grad_output: torch.Tensor, grad_bias: torch.Tensor) -> Callable[..., None]:
    """db = grad_output summed over batch and pixels, in its dtype, one Triton reduction."""
    n, k, p, q = grad_output.shape
    block_k = min(64, next_power_of_2(k))
    return KernelLaunch(
        kernels._conv2d_bias_grad_kernel,
        (cdiv(k, block_k),),
        (n, k, p, q, grad_output.stride(), grad_bias.stride(0)),
        {
            "NUMERICS": elementwise_numerics(needs_int64(grad_output) or n * p * q > 2**31 - 1 - 64, grad_output.dtype),
            "BLOCK_L": 64,
            "BLOCK_K": block_k,
        },
    )
