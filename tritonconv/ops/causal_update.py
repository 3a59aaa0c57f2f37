"""The decode step's launch (`kernels/causal_update.py`): built once per call key (by the caller:
`frontend/decode.py`), then replayed with the call's pointers, so a decode loop pays a key lookup
and one launch per layer and step."""

from __future__ import annotations

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import cdiv, next_power_of_2
from .launch import KernelLaunch

MAX_BLOCK_D = 64


def update_launch(
    x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
    seqlens: torch.Tensor | None, indices: torch.Tensor | None, silu: bool,
) -> KernelLaunch:  # fmt: skip
    """The launch for x, out (B, D, T), state (N, D, S), weight (D, W): one program per batch row and
    block of channels. It serves any tensors of the same shapes, strides and dtypes."""
    batch, channels, tokens = x.shape
    slots, width = state.shape[2], weight.shape[1]
    block_d = min(MAX_BLOCK_D, next_power_of_2(channels))
    constexprs = dict(
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, CIRCULAR=seqlens is not None,
        HAS_INDICES=indices is not None, BLOCK_D=block_d, BLOCK_T=next_power_of_2(tokens),
        BLOCK_S=next_power_of_2(max(slots, tokens)), num_warps=4 if block_d * tokens >= 256 else 1,
    )  # fmt: skip
    scalars = (channels, tokens, slots, state.shape[0], x.stride(), state.stride(), weight.stride(),
               0 if bias is None else bias.stride(0), out.stride())  # fmt: skip
    return KernelLaunch(kernels._causal_conv1d_update_kernel, (batch, cdiv(channels, block_d)), scalars, constexprs)


def launch_update(
    launch: KernelLaunch, x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    out: torch.Tensor, seqlens: torch.Tensor | None, indices: torch.Tensor | None,
) -> None:  # fmt: skip
    """Launch the decode step (`out` written, `state` updated in place). Absent optional operands
    are passed as x's pointer: the kernel never reads them (their constexpr flag is off)."""
    launch(x, state, weight, x if bias is None else bias, out, x if seqlens is None else seqlens,
           x if indices is None else indices)  # fmt: skip


def run_update(
    x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
    seqlens: torch.Tensor | None, indices: torch.Tensor | None, silu: bool,
) -> None:  # fmt: skip
    """Prepare and launch at once (the kernel gate; a planned call keeps its launch instead)."""
    launch = update_launch(x, state, weight, bias, out, seqlens, indices, silu)
    launch_update(launch, x, state, weight, bias, out, seqlens, indices)
