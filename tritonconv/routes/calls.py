"""Run a plan: allocate a pass's output, prepare the planned route's launch for the call's tensors,
and launch it. This is the planned path, which prepares every time; `prepared.py` keeps what it
prepares per call key and replays it, and the two give bitwise the same results (tested)."""

from __future__ import annotations

import torch

from .. import kernels
from ..ops.activation_grad import prepare_activation_grad
from ..ops.epilogue import NO_EPILOGUE, Epilogue
from ..ops.torch_conv import returned_or
from ..ops.wgrad import prepare_bias_grad
from ..problem.arithmetic import ConvProblem, is_channels_last_like, memory_format_of
from ..problem.runtime import check_device, check_dtype_supported, new_output, on_device_of
from .registry import Pass, Plan, served_routes, spec


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def check_route(plan: Plan, problem: ConvProblem, pass_name: str) -> None:
    """A plan from a cache edited by hand or made for another problem must not launch a route that
    computes something else."""
    if plan.variant not in served_routes(problem, pass_name):
        raise ValueError(
            f"{pass_name} route {plan.variant!r} does not compute this problem; "
            f"its routes are {', '.join(served_routes(problem, pass_name))}"
        )


def check_runnable(input: torch.Tensor) -> None:
    """Refuse what no kernel can run here (wrong device for the kernels, fp64 on an old Triton)."""
    check_device(input, kernels._conv2d_fwd_implicit_gemm_kernel)
    check_dtype_supported(input.dtype)


def conv2d_fwd(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    problem: ConvProblem,
    plan: Plan,
    epilogue: Epilogue = NO_EPILOGUE,
) -> torch.Tensor:
    """Y = epilogue(conv2d(input, weight) + bias) for a 4-D input, by `plan`; the output takes the
    memory format torch would give it (`problem.layout`)."""
    check_runnable(input)
    check_route(plan, problem, Pass.FWD)
    output = new_output(problem.output_shape, input, problem.memory_format)
    if output.numel() == 0:
        return output
    run = spec(Pass.FWD, plan.variant).prepare(input, weight, bias, output, problem, plan.config, epilogue)
    with on_device_of(input):
        return returned_or(run(input, weight, bias, output, epilogue.residual, epilogue.preactivation), output)


def conv2d_dgrad(
    grad_output: torch.Tensor, weight: torch.Tensor, problem: ConvProblem, channels_last: bool, plan: Plan
) -> torch.Tensor:
    """dX of `problem`'s 4-D input by `plan`'s route, channels_last when the input was."""
    check_route(plan, problem, Pass.DGRAD)
    grad_input = new_output(problem.input_shape, grad_output, memory_format_of(len(problem.input_shape), channels_last))
    if grad_input.numel() == 0:
        return grad_input
    run = spec(Pass.DGRAD, plan.variant).prepare(grad_output, weight, grad_input, problem, plan.config)
    with on_device_of(grad_output):
        return returned_or(run(grad_output, weight, grad_input), grad_input)


def conv2d_wgrad(
    input: torch.Tensor, grad_output: torch.Tensor, problem: ConvProblem, channels_last: bool, plan: Plan
) -> torch.Tensor:
    """dW by `plan`'s route, in the input's dtype, channels_last when the weight was; reproducible
    bit for bit (split partial sums are added in a fixed order)."""
    check_route(plan, problem, Pass.WGRAD)
    grad_weight = new_output(problem.weight_shape, input, memory_format_of(len(problem.weight_shape), channels_last))
    if problem.gemm_m == 0:
        return grad_weight.zero_()
    run = spec(Pass.WGRAD, plan.variant).prepare(input, grad_output, grad_weight, problem, plan.config)
    with on_device_of(input):
        return returned_or(run(input, grad_output, grad_weight), grad_weight)


def conv2d_bias_grad(grad_output: torch.Tensor) -> torch.Tensor:
    """db = grad_output summed over batch and pixels, in its dtype, one Triton reduction."""
    grad_bias = new_output((grad_output.shape[1],), grad_output)
    with on_device_of(grad_output):
        prepare_bias_grad(grad_output, grad_bias)(grad_output, grad_bias)
    return grad_bias


def activation_grad(
    grad_output: torch.Tensor, saved: torch.Tensor, activation: str, negative_slope: float
) -> torch.Tensor:
    """dL/dz = dL/dy * activation'(z), laid out like `grad_output`; `saved` is the output when
    `epilogue.saves_output`, else the pre-activation."""
    grad = new_output(tuple(grad_output.shape), grad_output, memory_format(is_channels_last_like(grad_output)))
    run = prepare_activation_grad(grad_output, saved, grad, activation, negative_slope)
    with on_device_of(grad_output):
        run(grad_output, saved, grad)
    return grad
