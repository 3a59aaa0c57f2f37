"""`causal_conv1d(..., seq_idx=...)`: several sequences packed in one row, as the causal-conv1d
package trains them. A tap at t reads x[t - (W-1-k)*dil] only where `seq_idx` there equals
`seq_idx[t]` (nothing before position 0), and where `seq_idx[t] < 0` (padding) the output is exactly
0, bias included.

It is the custom op `tritonconv::causal_conv1d_packed` with its backward registered, the same in
eager mode and in a compiled graph; its kernels are `kernels/causal_packed.py`. While a model's
problems are recorded, and under torch.func's transforms, the same computation runs in torch
(`reference_packed`): the per-tap masks of the definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..ops.causal_packed import accumulator_dtype, run_seq, run_seq_wgrad
from .causal_checks import check_floating, check_on_one_device, check_x_and_weight
from .differentiable import transforms_active
from .functional import autocast, autocast_dtype_for, recording_shapes


def packed_causal(x, weight, bias, seq_idx, silu: bool, dilation: int) -> torch.Tensor:
    """The output of `causal_conv1d` with `seq_idx`; x (B, C, L) or (C, L) with seq_idx (B, L) or
    (L,), weight (C, 1, W)."""
    batched = x.dim() == 3
    _check(x, weight, bias, seq_idx, dilation)
    x3, seq = (x, seq_idx) if batched else (x.unsqueeze(0), seq_idx.unsqueeze(0))
    dtype = autocast_dtype_for(x)
    if dtype is not None:
        x3, weight, bias = (autocast(t, dtype) for t in (x3, weight, bias))
    weight2 = weight[:, 0]
    if recording_shapes() or transforms_active():
        output = reference_packed(x3, weight2, bias, seq, silu, dilation)
    else:
        output = torch.ops.tritonconv.causal_conv1d_packed(x3, weight2, bias, seq, silu, dilation)
    return output if batched else output.squeeze(0)


def reference_packed(x, weight, bias, seq_idx, silu: bool, dilation: int) -> torch.Tensor:
    """The definition in torch operations (differentiable, any transform): x (B, C, L), weight
    (C, W), seq_idx (B, L); in the widest operand's dtype, returned in x's."""
    width, length = weight.shape[1], x.shape[-1]
    wide = accumulator_dtype(x, weight, bias)
    x_wide, weight_wide = x.to(wide), weight.to(wide)
    output = torch.zeros_like(x_wide) if bias is None else bias.to(wide)[:, None].expand_as(x_wide).clone()
    for tap in range(width):
        shift = (width - 1 - tap) * dilation
        shifted = F.pad(x_wide, (shift, 0))[..., :length]
        same = F.pad(seq_idx, (shift, 0), value=-1)[..., :length] == seq_idx
        output = output + shifted * weight_wide[:, tap, None] * same[:, None, :]
    if silu:
        output = F.silu(output)
    return output.masked_fill((seq_idx < 0)[:, None, :], 0).to(x.dtype)


@torch.library.custom_op("tritonconv::causal_conv1d_packed", mutates_args=())
def causal_conv1d_packed(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seq_idx: torch.Tensor, silu: bool, dilation: int
) -> torch.Tensor:
    """x (B, C, L), weight (C, W), seq_idx (B, L) -> the output, in x's dtype and layout."""
    output = torch.empty_like(x)
    if output.numel():
        run_seq(x, weight, bias, seq_idx, output, silu=silu, dilation=dilation)
    return output


@causal_conv1d_packed.register_fake
def _packed_fake(x, weight, bias, seq_idx, silu, dilation):
    return torch.empty_like(x)


@torch.library.custom_op("tritonconv::causal_conv1d_packed_backward", mutates_args=())
def causal_conv1d_packed_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seq_idx: torch.Tensor,
    silu: bool, dilation: int, input_grad: bool, weight_grad: bool, bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(dx or an empty tensor, dW or an empty tensor, db or an empty tensor): dx in x's dtype, dW and
    db in the weight's and the bias's, accumulated in fp32 (fp64 for fp64 operands)."""
    grad_pre = grad
    if silu and grad.numel():  # SiLU's derivative at the pre-activation, which the forward kernel recomputes
        pre = torch.empty_like(x, dtype=accumulator_dtype(x, weight, bias))
        run_seq(x, weight, bias, seq_idx, pre, silu=False, dilation=dilation)
        gate = torch.sigmoid(pre)
        grad_pre = grad.to(pre.dtype) * gate * (1 + pre * (1 - gate))
    grad_x = x.new_empty(0)  # an unasked gradient is an empty tensor of its own (outputs must not alias)
    if input_grad:
        grad_x = torch.empty_like(x)
        if grad_x.numel():
            run_seq(grad_pre, weight, None, seq_idx, grad_x, silu=False, dilation=dilation, flip=True)
    grad_weight, grad_bias = weight.new_empty(0), weight.new_empty(0)
    if weight_grad or bias_grad:
        if x.numel():
            summed_weight, summed_bias = run_seq_wgrad(x, grad_pre, seq_idx, weight.shape[1], dilation, bias_grad)
        else:
            summed_weight, summed_bias = torch.zeros_like(weight), None if bias is None else torch.zeros_like(bias)
        if weight_grad:
            grad_weight = summed_weight.to(weight.dtype)
        if bias_grad:
            grad_bias = summed_bias.to(bias.dtype)
    return grad_x, grad_weight, grad_bias


@causal_conv1d_packed_backward.register_fake
def _packed_backward_fake(grad, x, weight, bias, seq_idx, silu, dilation, input_grad, weight_grad, bias_grad):
    return (
        torch.empty_like(x) if input_grad else x.new_empty(0),
        torch.empty_like(weight) if weight_grad else weight.new_empty(0),
        torch.empty_like(bias) if bias_grad else weight.new_empty(0),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, seq_idx, silu, dilation = inputs
    ctx.save_for_backward(x, weight, bias, seq_idx)
    ctx.silu, ctx.dilation = silu, dilation


def _backward(ctx, grad):
    x, weight, bias, seq_idx = ctx.saved_tensors
    needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
    if not (needs_x or needs_weight or needs_bias):
        return None, None, None, None, None, None
    grad_x, grad_weight, grad_bias = torch.ops.tritonconv.causal_conv1d_packed_backward(
        grad, x, weight, bias, seq_idx, ctx.silu, ctx.dilation, needs_x, needs_weight, needs_bias
    )
    return (
        grad_x if needs_x else None,
        grad_weight if needs_weight else None,
        grad_bias if needs_bias else None,
        None,
        None,
        None,
    )


causal_conv1d_packed.register_autograd(_backward, setup_context=_setup_context)


def _check(x, weight, bias, seq_idx, dilation: int) -> None:
    """The argument rules, with the sizes that broke them in the message."""
    check_x_and_weight(x, weight)
    check_floating(x, weight, bias)
    if bias is not None and tuple(bias.shape) != (x.shape[-2],):
        raise RuntimeError(f"causal_conv1d: bias must be ({x.shape[-2]},); got {list(bias.shape)}")
    expected = (*x.shape[:-2], x.shape[-1])
    if tuple(seq_idx.shape) != expected or seq_idx.dtype not in (torch.int32, torch.int64):
        raise RuntimeError(f"causal_conv1d: seq_idx must be {list(expected)} int32 (x's batch and length); got "
                           f"{list(seq_idx.shape)} {seq_idx.dtype}")  # fmt: skip
    if dilation < 1:
        raise RuntimeError(f"causal_conv1d: dilation must be positive; got {dilation}")
    check_on_one_device("causal_conv1d", kernels._causal_seq_kernel, x, weight, bias, seq_idx)
