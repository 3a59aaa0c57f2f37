"""Launches of the packed causal conv1d kernels: the `seq_idx` forward, input and weight gradients
(`kernels/causal_packed.py`) and the variable-length prefill (`kernels/causal_varlen.py`).

Their tile sizes are fixed by the layout (the unit-stride axis gets the long side of the tile), not
tuned: the kernels are memory-bound and the planned routes' tuner does not know sequence numbers.
"""

from __future__ import annotations

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..problem.arithmetic import cdiv, next_power_of_2
from .launch import KernelLaunch

LONG_SIDE, SHORT_SIDE = 64, 16  # a tile's sides along the unit-stride axis and along the other
VARLEN_BLOCK_L, VARLEN_BLOCK_C = 64, 32
WGRAD_BLOCK_L, WGRAD_BLOCK_C = 32, 32
WGRAD_PROGRAMS = 264  # about two per SM of an H100: the weight gradient's splits fill the GPU


def accumulator_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """fp64 where any operand is fp64 (gradcheck), else fp32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _tile(x: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_L, BLOCK_C) for x (B, C, L): the long side along the axis with the unit stride."""
    length, channels = x.shape[-1], x.shape[-2]
    along_length = x.stride(-1) == 1 or channels == 1
    block_l, block_c = (LONG_SIDE, SHORT_SIDE) if along_length else (SHORT_SIDE, LONG_SIDE)
    return min(block_l, next_power_of_2(max(length, 1))), min(block_c, next_power_of_2(channels))


def seq_launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seq_idx: torch.Tensor, y: torch.Tensor,
    *, silu: bool, dilation: int, flip: bool,
) -> KernelLaunch:  # fmt: skip
    """The forward (or, with `flip`, the input gradient: x is then dY) over x, y (B, C, L), weight
    (C, W), seq_idx (B, L); pointers (x, weight, bias, seq_idx, y)."""
    batch, channels, length = x.shape
    block_l, block_c = _tile(x)
    l_blocks = cdiv(length, block_l)
    return KernelLaunch(
        kernels._causal_seq_kernel,
        (batch * l_blocks, cdiv(channels, block_c)),
        (channels, length, l_blocks, x.stride(), weight.stride(), 0 if bias is None else bias.stride(0),
         seq_idx.stride(), y.stride()),
        dict(WIDTH=weight.shape[1], DILATION=dilation, FLIP=flip, HAS_BIAS=bias is not None, SILU=silu,
             ACC_FP64=accumulator_dtype(x, weight, bias) == torch.float64, BLOCK_L=block_l, BLOCK_C=block_c,
             num_warps=4),
    )  # fmt: skip


def run_seq(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seq_idx: torch.Tensor, y: torch.Tensor,
    *, silu: bool, dilation: int, flip: bool = False,
) -> None:  # fmt: skip
    """Prepare and launch the forward (or the flipped input gradient) at once."""
    launch = seq_launch(x, weight, bias, seq_idx, y, silu=silu, dilation=dilation, flip=flip)
    launch(x, weight, x if bias is None else bias, seq_idx, y)


def run_seq_wgrad(
    x: torch.Tensor, grad: torch.Tensor, seq_idx: torch.Tensor, width: int, dilation: int, with_bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dW (C, W), db (C,) or None) in the accumulator's dtype: the kernel's partial sums over
    splits of the B * L rows, added in split order (the same bits on every run)."""
    batch, channels, length = x.shape
    rows = batch * length
    taps = next_power_of_2(width)
    channel_blocks = cdiv(channels, WGRAD_BLOCK_C)
    splits = max(1, min(cdiv(WGRAD_PROGRAMS, channel_blocks), cdiv(rows, WGRAD_BLOCK_L)))
    chunk = cdiv(cdiv(rows, splits), WGRAD_BLOCK_L) * WGRAD_BLOCK_L
    splits = max(1, cdiv(rows, chunk))
    dtype = accumulator_dtype(x, grad)
    partial = torch.empty(splits, taps, channels, dtype=dtype, device=x.device)
    bias_partial = torch.empty(splits, channels, dtype=dtype, device=x.device) if with_bias else partial
    KernelLaunch(
        kernels._causal_seq_wgrad_kernel,
        (channel_blocks, splits),
        (channels, length, rows, chunk, x.stride(), grad.stride(), seq_idx.stride()),
        dict(WIDTH=width, TAPS=taps, DILATION=dilation, HAS_BIAS=with_bias, ACC_FP64=dtype == torch.float64,
             BLOCK_L=WGRAD_BLOCK_L, BLOCK_C=WGRAD_BLOCK_C, num_warps=4),
    )(x, grad, seq_idx, partial, bias_partial)  # fmt: skip
    grad_weight = partial.sum(0)[:width].t()
    return grad_weight, bias_partial.sum(0) if with_bias else None


def varlen_launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, states: torch.Tensor,
    starts: torch.Tensor, indices: torch.Tensor | None, has_state: torch.Tensor | None, silu: bool, pad_slot: int,
) -> KernelLaunch:  # fmt: skip
    """The prefill over x, y (C, total), weight (C, W), states (N, C, S), starts (nseq + 1,); pointers
    (x, weight, bias, y, states, starts, indices, has_state). It serves any tensors of the same
    shapes, strides and dtypes."""
    channels, total = x.shape
    sequences = starts.shape[0] - 1
    width, slots = weight.shape[1], states.shape[2]
    block_l = max(VARLEN_BLOCK_L, next_power_of_2(width))  # a sequence's history lies in its block 0
    block_c = min(VARLEN_BLOCK_C, next_power_of_2(channels))
    return KernelLaunch(
        kernels._causal_varlen_kernel,
        (total // block_l + sequences, cdiv(channels, block_c)),
        (channels, sequences, slots, states.shape[0], pad_slot, max(sequences - 1, 0).bit_length(), x.stride(),
         weight.stride(), 0 if bias is None else bias.stride(0), y.stride(), states.stride()),
        dict(WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, HAS_INDICES=indices is not None,
             HAS_INITIAL=has_state is not None, BLOCK_L=block_l, BLOCK_C=block_c,
             BLOCK_S=next_power_of_2(slots), num_warps=4),
    )  # fmt: skip


def launch_varlen(
    launch: KernelLaunch, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
    states: torch.Tensor, starts: torch.Tensor, indices: torch.Tensor | None, has_state: torch.Tensor | None,
) -> None:  # fmt: skip
    """Launch the prefill (`y` written, the state lines updated in place). Absent optional operands
    are passed as x's pointer: the kernel never reads them (their constexpr flag is off)."""
    launch(x, weight, x if bias is None else bias, y, states, starts, x if indices is None else indices,
           x if has_state is None else has_state)  # fmt: skip
