"""`tritonconv.causal_conv1d_varlen`: an inference engine's prefill of a Mamba-style causal depthwise
conv1d, with the argument names of vLLM's and SGLang's Triton `causal_conv1d_fn`: variable-length
sequences packed along x, each starting from its line of a state cache and leaving its last inputs
there, in one launch (`kernels/causal_varlen.py`).

Eagerly the call checks its arguments on its key's first call, then replays the key's launch. Under
torch.compile and torch.export it is the custom op `tritonconv::causal_conv1d_varlen`, which
declares the state cache it updates in place.
"""

from __future__ import annotations

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..ops.causal_packed import launch_varlen, varlen_launch
from ..ops.launch import LaunchCache
from ..plan.prepared import tensor_key
from .causal_checks import SERVING_DTYPES, check_on_one_device, check_weight_and_bias

VARLEN_ACTIVATIONS = (None, "silu", "swish")
_launches = LaunchCache()  # call key -> its checked, prepared launch


def causal_conv1d_varlen(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    query_start_loc: torch.Tensor,
    conv_states: torch.Tensor,
    cache_indices: torch.Tensor | None = None,
    has_initial_state: torch.Tensor | None = None,
    pad_slot_id: int = -1,
) -> torch.Tensor:
    """The outputs of packed sequences, their state lines updated in place.

    - `x`: (D, total_tokens), any strides, fp32/fp16/bf16: sequence i is columns
      [query_start_loc[i], query_start_loc[i+1]); `query_start_loc` (nseq + 1,) int32, from 0,
      non-decreasing. The output has x's shape, dtype and layout; the arithmetic is fp32.
    - `weight`: (D, W) or (D, 1, W); `bias`: (D,); `activation`: None, 'silu' or 'swish' (the same).
    - `conv_states`: (N, D, S) with S >= W - 1, any strides and float dtype. Sequence i uses line
      `cache_indices[i]` (i without indices; lines are unique). Where `has_initial_state[i]` (a bool
      or int (nseq,) tensor) is set, the W - 1 inputs before the sequence are the line's last W - 1
      columns, otherwise zeros (all zeros without `has_initial_state`). The line then becomes the
      last S columns of cat(line or zeros, the sequence), as `causal_conv1d_update` leaves a
      shifting state, so decoding continues from it.
    - A sequence whose index is `pad_slot_id` (or outside the cache) is padding: its outputs are 0
      and no line is read or written.

    No autograd: it is a serving step.
    """
    if activation not in VARLEN_ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish'; got {activation!r}")
    weight2 = weight.squeeze(1) if weight.dim() == 3 and weight.shape[1] == 1 else weight
    silu = activation is not None
    operands = (x, weight2, bias, query_start_loc, conv_states, cache_indices, has_initial_state)
    if torch.compiler.is_compiling():
        return torch.ops.tritonconv.causal_conv1d_varlen(*operands, silu, pad_slot_id)
    return _varlen(*operands, silu, pad_slot_id)


def _varlen(x, weight, bias, starts, states, indices, has_state, silu: bool, pad_slot: int) -> torch.Tensor:
    """The launch for these operands' key (checked and prepared on the key's first call), then one launch."""
    operands = (x, weight, bias, starts, states, indices, has_state)
    key = (*(tensor_key(t) for t in operands), silu, pad_slot)
    out = torch.empty_like(x)

    def build():
        _check(*operands)
        return varlen_launch(x, weight, bias, out, states, starts, indices, has_state, silu, pad_slot)

    launch = _launches.get(key, build)
    if starts.shape[0] > 1 and x.shape[0]:
        launch_varlen(launch, x, weight, bias, out, states, starts, indices, has_state)
    return out


@torch.library.custom_op("tritonconv::causal_conv1d_varlen", mutates_args=("conv_states",))
def causal_conv1d_varlen_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    query_start_loc: torch.Tensor,
    conv_states: torch.Tensor,
    cache_indices: torch.Tensor | None,
    has_initial_state: torch.Tensor | None,
    silu: bool,
    pad_slot_id: int,
) -> torch.Tensor:
    """The prefill as a graph sees it: x (D, total) in, the output out, `conv_states` updated."""
    return _varlen(x, weight, bias, query_start_loc, conv_states, cache_indices, has_initial_state, silu, pad_slot_id)


@causal_conv1d_varlen_op.register_fake
def _varlen_fake(x, weight, bias, query_start_loc, conv_states, cache_indices, has_initial_state, silu, pad_slot_id):
    return torch.empty_like(x)


def _check(x, weight, bias, starts, states, indices, has_state) -> None:
    """The argument rules, with the sizes that broke them in the message."""
    if x.dim() != 2 or x.dtype not in SERVING_DTYPES:
        raise RuntimeError(f"causal_conv1d_varlen: x must be (D, total_tokens) fp32/fp16/bf16; got {list(x.shape)} "
                           f"{x.dtype}")  # fmt: skip
    channels = x.shape[0]
    check_weight_and_bias("causal_conv1d_varlen", weight, bias, channels)
    width = weight.shape[1]
    if (
        states.dim() != 3
        or states.shape[1] != channels
        or states.shape[2] < width - 1
        or states.dtype not in SERVING_DTYPES
    ):
        raise RuntimeError(f"causal_conv1d_varlen: conv_states must be (N, D, S) fp32/fp16/bf16 with D = {channels} "
                           f"and S >= W - 1 = {width - 1}; got {list(states.shape)} {states.dtype}")  # fmt: skip
    integer = (torch.int32, torch.int64)
    if starts.dim() != 1 or starts.shape[0] < 1 or starts.dtype not in integer:
        raise RuntimeError(f"causal_conv1d_varlen: query_start_loc must be (nseq + 1,) int32; got {list(starts.shape)} "
                           f"{starts.dtype}")  # fmt: skip
    sequences = starts.shape[0] - 1
    if indices is not None and (indices.shape != (sequences,) or indices.dtype not in integer):
        raise RuntimeError(f"causal_conv1d_varlen: cache_indices must be ({sequences},) int32; got "
                           f"{list(indices.shape)} {indices.dtype}")  # fmt: skip
    if has_state is not None and (has_state.shape != (sequences,) or has_state.dtype not in (torch.bool, *integer)):
        raise RuntimeError(f"causal_conv1d_varlen: has_initial_state must be ({sequences},) bool; got "
                           f"{list(has_state.shape)} {has_state.dtype}")  # fmt: skip
    if indices is None and states.shape[0] < sequences:
        raise RuntimeError(f"causal_conv1d_varlen: without cache_indices conv_states needs a line per sequence, "
                           f"{sequences}; got {states.shape[0]}")  # fmt: skip
    check_on_one_device("causal_conv1d_varlen", kernels._causal_varlen_kernel, x, weight, bias, starts, states,
                        indices, has_state)  # fmt: skip
