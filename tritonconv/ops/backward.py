"""Backward launchers: input, weight and bias gradients of a forward `ConvProblem`, all in Triton."""

from __future__ import annotations

import torch
import triton

from ..arithmetic import CHANNELS_LAST, CONTIGUOUS, ConvProblem, dgrad_as_conv1x1, is_channels_last_like
from ..config import KernelConfig, dgrad_by_phase
from ..dispatch import Plan, backward_variants, plan_pass
from ..kernels import (
    _conv2d_bias_grad_kernel,
    _conv2d_dgrad_kernel,
    _conv2d_dgrad_phased_kernel,
    _conv2d_wgrad_partial_kernel,
)
from ..runtime import new_output, on_device_of
from .common import LaunchFlags, geometry_kwargs, needs_int64
from .depthwise_backward import depthwise_dgrad, depthwise_wgrad
from .forward import conv2d_fwd
from .split_reduction import new_workspace, split_reduction, sum_splits


def _gradient_buffer(shape: tuple[int, ...], like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A gradient in `like`'s dtype and device, channels_last if the tensor it is the gradient of was."""
    return new_output(shape, like, torch.channels_last if channels_last else torch.contiguous_format)


def _flags(layout_source: torch.Tensor, index_64: bool) -> LaunchFlags:
    """Flags for a backward launch; channels_inner comes from the tensor the reduction walks."""
    return LaunchFlags.for_call(
        layout_source.dtype, _conv2d_dgrad_kernel, index_64, is_channels_last_like(layout_source)
    )


def conv2d_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, problem: ConvProblem, channels_last: bool,
    plan: Plan | None = None,
) -> torch.Tensor:  # fmt: skip
    """dX of `problem`'s 4-D input, channels_last when the input was (the input itself is not needed).

    `plan` (default: `plan_pass(problem, 'dgrad')`: tuned, shipped or heuristic) picks the route
    (`dispatch.backward_variants`): a stride-1 1x1 convolution's input gradient runs through the
    conv1x1 GEMM kernel (dY times the transposed weight, a strided view, no copy), a stride-1
    depthwise one's through the depthwise kernel (`ops/depthwise_backward.py`), and the rest through
    the general kernels: by stride phase for strided convolutions with 16 or more output channels
    per group, else by masking.
    """
    plan = plan or plan_pass(problem, "dgrad")
    _check_route(plan, problem, "dgrad")
    layout = CHANNELS_LAST if channels_last else CONTIGUOUS
    if plan.variant == "conv1x1":
        transposed = dgrad_as_conv1x1(problem, layout)
        return conv2d_fwd(grad_output, weight.transpose(0, 1), None, transposed, plan)
    if plan.variant == "depthwise":
        return depthwise_dgrad(grad_output, weight, problem, layout, plan)
    grad_input = _gradient_buffer(problem.input_shape, grad_output, channels_last)
    if grad_input.numel() == 0:
        return grad_input
    _launch_general_dgrad(grad_output, weight, grad_input, problem, plan.config)
    return grad_input


def _launch_general_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, grad_input: torch.Tensor, problem: ConvProblem,
    config: KernelConfig,
) -> None:  # fmt: skip
    """The masking kernel over all N*H*W input pixels, or (`dgrad_by_phase`) the phased kernel over
    each stride phase's pixels, one phase per grid row. Both take the same arguments; only the
    masking kernel orders its reduction by layout (CHANNELS_INNER): the phased one's addresses suit
    any layout."""
    stride_h, stride_w = problem.stride
    phased = dgrad_by_phase(problem)
    if phased:
        kernel, phases = _conv2d_dgrad_phased_kernel, stride_h * stride_w
        m = problem.n * triton.cdiv(problem.h, stride_h) * triton.cdiv(problem.w, stride_w)
    else:
        kernel, phases = _conv2d_dgrad_kernel, 1
        m = problem.n * problem.h * problem.w
    flags = _flags(grad_output, needs_int64(grad_output, weight, grad_input) or m > 2**31 - 1 - config.block_m)
    layout_kwargs = {} if phased else {"CHANNELS_INNER": flags.channels_inner}
    tiles = triton.cdiv(m, config.block_m) * triton.cdiv(problem.c_per_group, config.block_n)
    with on_device_of(grad_output):
        kernel[(problem.groups * tiles, phases)](
            grad_output,
            weight,
            grad_input,
            problem.n,
            problem.h,
            problem.w,
            problem.p,
            problem.q,
            problem.c_per_group,
            *grad_output.stride(),
            *weight.stride(),
            *grad_input.stride(),
            K_PER_GROUP=problem.k_per_group,
            **geometry_kwargs(problem),
            GROUPS=problem.groups,
            INDEX_64=flags.index_64,
            **layout_kwargs,
            **flags.numeric_kwargs(),
            **config.gemm_kwargs(),
        )


def _check_route(plan: Plan, problem: ConvProblem, pass_name: str) -> None:
    """A plan from a cache edited by hand or for another problem must not launch a route that
    computes something else."""
    if plan.variant not in backward_variants(problem, pass_name):
        raise ValueError(
            f"{pass_name} route {plan.variant!r} does not compute this problem; "
            f"its routes are {', '.join(backward_variants(problem, pass_name))}"
        )


def conv2d_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, problem: ConvProblem, channels_last: bool,
    plan: Plan | None = None,
) -> torch.Tensor:  # fmt: skip
    """dW in the input's dtype, channels_last when the weight was; reproducible bit for bit (the
    split partial sums are added in a fixed order). `plan` (default: `plan_pass(problem, 'wgrad')`)
    picks the route: depthwise layers have a direct kernel of their own, the rest the general one."""
    plan = plan or plan_pass(problem, "wgrad")
    _check_route(plan, problem, "wgrad")
    grad_weight = _gradient_buffer(problem.weight_shape, input, channels_last)
    reduction = problem.n * problem.p * problem.q
    if reduction == 0:
        return grad_weight.zero_()
    if plan.variant == "depthwise":
        depthwise_wgrad(input, grad_output, problem, grad_weight, plan.config)
        return grad_weight
    config = plan.config
    split, chunk = split_reduction(reduction, grad_weight.numel(), config.split_k, config.block_k)
    partial = new_workspace(split, grad_weight.numel(), input)
    tiles = triton.cdiv(problem.k_per_group, config.block_m) * triton.cdiv(problem.gemm_k, config.block_n)
    flags = _flags(input, needs_int64(input, grad_output) or reduction > 2**31 - 1 - config.block_k)
    with on_device_of(input):
        _conv2d_wgrad_partial_kernel[(problem.groups * tiles, split)](
            input,
            grad_output,
            partial,
            problem.n,
            problem.h,
            problem.w,
            problem.p,
            problem.q,
            problem.k_per_group,
            chunk,
            *input.stride(),
            *grad_output.stride(),
            partial.stride(0),
            C_PER_GROUP=problem.c_per_group,
            **geometry_kwargs(problem),
            GROUPS=problem.groups,
            TAP_MAJOR=problem.c_per_group % config.block_n == 0,
            CHANNELS_INNER=flags.channels_inner,
            INDEX_64=flags.index_64,
            **flags.numeric_kwargs(),
            BLOCK_M=config.block_m,
            BLOCK_N=config.block_n,
            BLOCK_K=config.block_k,
            num_warps=config.num_warps,
            num_stages=config.num_stages,
        )
        sum_splits(partial, grad_weight, problem)
    return grad_weight


def conv2d_bias_grad(grad_output: torch.Tensor) -> torch.Tensor:
    """db = grad_output summed over batch and pixels, in its dtype, one Triton reduction."""
    n, k, p, q = grad_output.shape
    grad_bias = new_output((k,), grad_output)
    block_k = min(64, triton.next_power_of_2(k))
    with on_device_of(grad_output):
        _conv2d_bias_grad_kernel[(triton.cdiv(k, block_k),)](
            grad_output,
            grad_bias,
            n,
            k,
            p,
            q,
            *grad_output.stride(),
            grad_bias.stride(0),
            INDEX_64=needs_int64(grad_output) or n * p * q > 2**31 - 1 - 64,
            ACC_FP64=grad_output.dtype == torch.float64,
            BLOCK_L=64,
            BLOCK_K=block_k,
        )
    return grad_bias
