"""`tritonconv.causal_conv1d_update`: the decode step of a Mamba-style causal depthwise conv1d, with
the semantics and argument names of the causal-conv1d package's function of the same name.

Eagerly the call checks its arguments, looks up its prepared launch and launches once for the whole
batch (`ops/causal_update.py`). Under torch.compile and torch.export it is the custom op
`tritonconv::causal_conv1d_update`, which declares the state it updates in place, so a compiled
decode loop (and a CUDA graph of one) holds it.
"""

from __future__ import annotations

import torch

from .. import kernels  # the kernel modules (and Triton) load on first use
from ..ops.causal_update import launch_update, update_launch
from ..ops.launch import LaunchCache
from ..plan.prepared import tensor_key
from .causal_checks import SERVING_DTYPES, check_on_one_device, check_weight_and_bias

UPDATE_ACTIVATIONS = (None, "silu", "swish")
_launches = LaunchCache()  # call key -> its checked, prepared launch


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    cache_seqlens: torch.Tensor | None = None,
    conv_state_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step: the outputs of x's T new tokens, and the state updated in place.

    - `x`: (B, D) (one token) or (B, D, T), any strides, fp32/fp16/bf16; the output has its shape,
      dtype and layout. The arithmetic is fp32 whatever the dtypes of x, weight, bias and state.
    - `conv_state`: (N, D, S), S >= W - 1, any strides and float dtype, updated in place. Without
      `cache_seqlens` output t reads the window cat(state[..., -(W-1):], x) and the state becomes
      cat(state, x)[..., -S:]. With `cache_seqlens` (B,) int32, the count of tokens each sequence has
      seen, the state is a circular buffer: history at (cs - (W-1) + i) mod S, token i written at
      (cs + i) mod S, nothing shifts (the caller advances cache_seqlens).
    - `weight`: (D, W) or (D, 1, W); `bias`: (D,); `activation`: None, 'silu' or 'swish' (the same).
    - `conv_state_indices` (B,) int32: row b uses state line conv_state_indices[b] (lines are
      unique); a negative index is a padded row: output exactly 0, its state untouched. An index
      at or past N is treated as padding too (nothing outside the cache is read or written).
      Without indices, N must equal B.

    No autograd: it is a serving step.
    """
    if activation not in UPDATE_ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish'; got {activation!r}")
    one_token = x.dim() == 2
    x3 = x.unsqueeze(-1) if one_token else x
    weight2 = weight.squeeze(1) if weight.dim() == 3 and weight.shape[1] == 1 else weight
    silu = activation is not None
    if torch.compiler.is_compiling():
        out = torch.ops.tritonconv.causal_conv1d_update(x3, conv_state, weight2, bias, silu, cache_seqlens,
                                                        conv_state_indices)  # fmt: skip
    else:
        out = _update(x3, conv_state, weight2, bias, silu, cache_seqlens, conv_state_indices)
    return out.squeeze(-1) if one_token else out


def _update(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices) -> torch.Tensor:
    """The launch for these operands' key (checked and prepared on the key's first call), then one launch."""
    operands = (x, conv_state, weight, bias, cache_seqlens, conv_state_indices)
    key = (*(tensor_key(t) for t in operands), silu)
    out = torch.empty_like(x)

    def build():
        _check(*operands)
        return update_launch(x, conv_state, weight, bias, out, cache_seqlens, conv_state_indices, silu)

    launch = _launches.get(key, build)
    if out.numel():
        launch_update(launch, x, conv_state, weight, bias, out, cache_seqlens, conv_state_indices)
    return out


@torch.library.custom_op("tritonconv::causal_conv1d_update", mutates_args=("conv_state",))
def causal_conv1d_update_op(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    silu: bool,
    cache_seqlens: torch.Tensor | None,
    conv_state_indices: torch.Tensor | None,
) -> torch.Tensor:
    """The decode step as a graph sees it: x (B, D, T) in, the output out, `conv_state` updated."""
    return _update(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)


@causal_conv1d_update_op.register_fake
def _update_fake(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices):
    return torch.empty_like(x)


def _check(x, conv_state, weight, bias, cache_seqlens, conv_state_indices) -> None:
    """The package's argument rules, with the sizes that broke them in the message."""
    if x.dim() != 3 or x.dtype not in SERVING_DTYPES:
        raise RuntimeError(f"causal_conv1d_update: x must be (B, D) or (B, D, T) fp32/fp16/bf16; got "
                           f"{list(x.shape)} {x.dtype}")  # fmt: skip
    batch, channels, _ = x.shape
    check_weight_and_bias("causal_conv1d_update", weight, bias, channels)
    width = weight.shape[1]
    if conv_state.dim() != 3 or conv_state.shape[1] != channels or conv_state.shape[2] < width - 1:
        raise RuntimeError(f"causal_conv1d_update: conv_state must be (N, D, S) with D = {channels} and S >= W - 1 = "
                           f"{width - 1}; got {list(conv_state.shape)}")  # fmt: skip
    if conv_state.dtype not in SERVING_DTYPES:
        raise RuntimeError(f"causal_conv1d_update: conv_state must be fp32/fp16/bf16; got {conv_state.dtype}")
    for name, index in (("cache_seqlens", cache_seqlens), ("conv_state_indices", conv_state_indices)):
        if index is not None and (index.shape != (batch,) or index.dtype not in (torch.int32, torch.int64)):
            raise RuntimeError(f"causal_conv1d_update: {name} must be ({batch},) int32; got {list(index.shape)} "
                               f"{index.dtype}")  # fmt: skip
    if conv_state_indices is None and conv_state.shape[0] != batch:
        raise RuntimeError(f"causal_conv1d_update: without conv_state_indices conv_state's first size must be the "
                           f"batch, {batch}; got {conv_state.shape[0]}")  # fmt: skip
    check_on_one_device("causal_conv1d_update", kernels._causal_conv1d_update_kernel, x, conv_state, weight, bias,
                        cache_seqlens, conv_state_indices)  # fmt: skip
