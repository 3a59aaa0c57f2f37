"""`tritonconv.causal_conv1d`: the short causal depthwise convolution of Mamba-style models, with
the crop and the SiLU they apply after it computed in the same kernel.

Mamba, Mamba-2 and their kin run `nn.Conv1d(D, D, kernel_size=S, groups=D, padding=S - 1)` over a
(B, D, L) sequence, then keep the first L outputs (`[..., :L]`) and apply SiLU. That is the
convolution with all its padding at the start: output t reads inputs t - (S-1)*dilation .. t. Here
it is one problem with padding (S-1)*dilation before the sequence and none after
(`ConvProblem.padding_end`), so the kernel writes exactly L outputs (no padded tail to crop) and
the SiLU runs in its epilogue. It runs the long-sequence depthwise route (`ops/depthwise_1d.py`),
whose input gradient reads the weight back to front and whose weight gradient sums dY once for
every tap, bias gradient included.

Under torch.compile and torch.export, forward AD and torch.func, and while a model's problems are
recorded, it is conv1d (its custom op, its differentiable Functions, torch's) with symmetric padding,
then the crop and torch's SiLU.

The causal-conv1d package's initial and final states and its mixed precision (fp16/bf16 x, fp32
weight) compose with that: the states as columns before the sequence, the operands widened to fp32
(`_causal_with_states`). Several sequences packed in a row (`seq_idx`) run the packed op of
`frontend/packed.py`, whose kernels mask the taps at sequence boundaries.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..ops.epilogue import NO_EPILOGUE, Epilogue, torch_activation
from ..plan.prepared import _prepared as PREPARED
from ..plan.prepared import call_key, prepared_conv
from ..problem.arithmetic import ConvProblem, problem_from_tensors
from ..problem.torch_reference import TORCH_CONV1D, check_like_torch
from .causal_checks import check_floating, check_x_and_weight
from .differentiable import transforms_active
from .functional import _run as run_prepared
from .functional import (
    autocast,
    autocast_dtype_for,
    conv1d,
    fused_key,
    fused_needs_grad,
    note_problem,
    recording_shapes,
    run_fused,
)
from .packed import packed_causal

CAUSAL_ACTIVATIONS = (None, "silu", "swish")
CAUSAL_KEY = ("causal conv1d",)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    dilation: int = 1,
    seq_idx: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
    final_states_out: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """activation(F.conv1d(x, weight, bias, padding=(S-1)*dilation, dilation=dilation,
    groups=C)[..., :L]): each output reads only its own and earlier positions.

    `x` is (B, C, L) or unbatched (C, L) in any strides (the (B, L, C) layout Mamba keeps, as a
    transposed view, is read in place); `weight` is `F.conv1d`'s depthwise weight (C, 1, S), or
    (C, S) as the causal-conv1d package takes it; `bias` is (C,); `activation` is None or 'silu'
    ('swish' is the same). The output has x's shape, dtype and layout (a (B, L, C) view in gives one
    out), so the projection that follows reads it without a copy. Differentiable in x, weight, bias
    and `initial_states`; errors are `F.conv1d`'s for the same call.

    As the causal-conv1d package (batched x, dilation 1 for the states):
    - x, weight and bias may differ in dtype (fp32/fp16/bf16): the arithmetic is then fp32, the
      output and dx in x's dtype, dweight and dbias in theirs.
    - `initial_states` (B, C, S-1) replace the zero padding before the sequence.
    - `return_final_states=True` returns (out, final): the last S-1 columns of cat(initial_states or
      zeros, x), in x's dtype, (B, C, S-1); `final_states_out` (B, C, S-1) receives them in place
      (and is returned as `final`). Both are differentiable.
    - `seq_idx` (B, L) int32, several sequences packed in one row: a tap reads x only where
      seq_idx there equals seq_idx at the output; where seq_idx < 0 (padding) the output is 0. Any
      dilation and either layout; not with `initial_states` (nothing comes before position 0).
    """
    if activation not in CAUSAL_ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish'; got {activation!r}")
    activation = None if activation is None else "silu"
    if weight.dim() == 2:
        weight = weight.unsqueeze(1)
    mixed = weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype)
    return_final = return_final_states or final_states_out is not None
    if seq_idx is not None:
        if initial_states is not None:
            raise ValueError("causal_conv1d: initial_states cannot be combined with seq_idx: with packed sequences "
                             "nothing comes before position 0 (the causal-conv1d package refuses it too)")  # fmt: skip
        output = packed_causal(x, weight, bias, seq_idx, activation is not None, dilation)
        if not return_final:
            return output
        _check_states(x, weight, dilation, None)
        return output, _final_states(x, None, weight.shape[-1], final_states_out)
    if initial_states is None and not return_final and not mixed:
        return _causal(x, weight, bias, activation, dilation)
    return _causal_with_states(x, weight, bias, activation, dilation, initial_states, return_final, final_states_out)


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
    final_states_out: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`causal_conv1d` under the causal-conv1d package's name and positional order (seq_idx fourth,
    activation last), so `from tritonconv import causal_conv1d_fn` replaces the package's import in
    code that passes its arguments by position."""
    return causal_conv1d(x, weight, bias, activation, seq_idx=seq_idx, initial_states=initial_states,
                         return_final_states=return_final_states, final_states_out=final_states_out)  # fmt: skip


def _causal_with_states(x, weight, bias, activation, dilation, initial_states, return_final, final_states_out):
    """Mixed dtypes (fp32 arithmetic: the operands widened, the output narrowed back, so the
    gradients come back in each operand's dtype) and the states of the causal-conv1d package: the
    initial states as the columns before the sequence (a valid convolution over cat(states, x),
    concatenated in x's storage order so the output keeps x's layout), the final states as the last
    S-1 columns of that concatenation."""
    check_floating(x, weight, bias)
    if initial_states is not None or return_final:
        _check_states(x, weight, dilation, initial_states)
    mixed = weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype)
    wide = x.dtype if not mixed else torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    x_wide, weight_wide = x.to(wide), weight.to(wide)  # no copy where the dtypes agree
    bias_wide = None if bias is None else bias.to(wide)
    if initial_states is None:
        output = _causal(x_wide, weight_wide, bias_wide, activation, dilation)
    else:  # the history is in the sequence: no padding before it
        output = _causal(_cat_along_length(initial_states.to(wide), x_wide), weight_wide, bias_wide, activation, 1, 0)
    output = output.to(x.dtype)
    if not return_final:
        return output
    return output, _final_states(x, initial_states, weight.shape[-1], final_states_out)


def _check_states(x, weight, dilation: int, initial_states) -> None:
    """The states' rules: a batched x, dilation 1, initial states (B, C, W-1)."""
    if x.dim() != 3 or dilation != 1:
        raise RuntimeError("causal_conv1d: initial and final states need a batched x (B, C, L) and dilation 1")
    expected = (*x.shape[:2], weight.shape[-1] - 1)
    if initial_states is not None and tuple(initial_states.shape) != expected:
        raise RuntimeError(f"causal_conv1d: initial_states must be {list(expected)}; got {list(initial_states.shape)}")


def _final_states(x, initial_states, taps: int, final_states_out) -> torch.Tensor:
    """The last W-1 columns of cat(initial_states or zeros, x), in x's dtype (B, C, W-1), written
    into `final_states_out` where given (differentiably: a copy_ into it)."""
    history = x.new_zeros(*x.shape[:2], taps - 1) if initial_states is None else initial_states.to(x.dtype)
    recent = x[..., max(x.shape[-1] - (taps - 1), 0) :]  # only the columns the final states can take
    final = _cat_along_length(history, recent)[..., recent.shape[-1] :].clone(memory_format=torch.contiguous_format)
    if final_states_out is not None:
        if tuple(final_states_out.shape) != tuple(final.shape):
            raise RuntimeError(f"causal_conv1d: final_states_out must be {list(final.shape)}; got "
                               f"{list(final_states_out.shape)}")  # fmt: skip
        final = final_states_out.copy_(final)
    return final


def _cat_along_length(before: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """cat(before, x) along the length, in x's storage order: a (B, L, C)-strided x gives a
    (B, L', C)-strided result."""
    if x.dim() == 3 and x.stride(1) == 1 and x.stride(2) != 1:  # channels innermost: keep them so
        return torch.cat([before.transpose(1, 2), x.transpose(1, 2)], dim=1).transpose(1, 2)
    return torch.cat([before, x], dim=-1)


def _causal(x, weight, bias, activation, dilation, reach: int | None = None) -> torch.Tensor:
    """The causal convolution of same-dtype operands (`causal_conv1d` without states): `reach`
    positions of padding before the sequence ((S-1)*dilation by default; 0 for a sequence that
    carries its history in its first S-1 columns, whose output is that much shorter)."""
    check_x_and_weight(x, weight)
    channels, taps, length = x.shape[-2], weight.shape[-1], x.shape[-1]
    reach = (taps - 1) * dilation if reach is None else reach
    if recording_shapes() and length > 0:  # what runs is the causal problem, not the padded call below
        dtype = autocast_dtype_for(x)
        x_cast, weight_cast, bias_cast = (
            (x, weight, bias) if dtype is None else (autocast(t, dtype) for t in (x, weight, bias))
        )
        x_2d = x_cast.unsqueeze(-2) if x.dim() == 3 else x_cast.unsqueeze(-2).unsqueeze(0)
        geometry = ((1, 1), (0, reach), (1, dilation), channels)
        note_problem(causal_problem(x_2d, weight_cast.unsqueeze(-2), bias_cast, *geometry))
    if recording_shapes() or torch.compiler.is_compiling() or transforms_active() or length == 0:
        padded = conv1d if not recording_shapes() else TORCH_CONV1D
        output = padded(x, weight, bias, 1, reach, dilation, channels)[..., :length]
        return output if activation is None else torch_activation(output, activation)
    autocast_dtype = autocast_dtype_for(x)
    if autocast_dtype is not None:
        x, weight, bias = (autocast(t, autocast_dtype) for t in (x, weight, bias))
    geometry = ((1, 1), (0, reach), (1, dilation), channels)
    x_2d, weight_2d = x.unsqueeze(-2), weight.unsqueeze(-2)
    batched = x.dim() == 3
    needs_grad = fused_needs_grad(x, weight, bias, None)
    fused = () if activation is None else fused_key(activation, 0.01, None, needs_grad)
    key = call_key(x_2d, weight_2d, bias, geometry, (*CAUSAL_KEY, *fused))
    epilogue = NO_EPILOGUE if activation is None else Epilogue(activation)
    prepared = PREPARED.get(key) or prepared_conv(key, x_2d, weight_2d, bias, geometry, epilogue,
                                                  as_problem=_checked(x, weight, bias, reach, dilation))  # fmt: skip
    if activation is None:
        return run_prepared(prepared, x_2d, weight_2d, bias).squeeze(-2)
    output = run_fused(prepared, x_2d if batched else x_2d.unsqueeze(0), weight_2d, bias, None, needs_grad)
    return (output if batched else output.squeeze(0)).squeeze(-2)


def _checked(x, weight, bias, reach: int, dilation: int):
    """The prepared call's problem builder: F.conv1d's checks for the padded call, then the causal problem."""

    def build(input_2d, weight_2d, bias, *geometry) -> ConvProblem:
        check_like_torch(TORCH_CONV1D, x, weight, bias, (1, reach, dilation, x.shape[-2]), batched_dim=3)
        return causal_problem(input_2d, weight_2d, bias, *geometry)

    return build


def causal_problem(
    input_2d: torch.Tensor, weight_2d: torch.Tensor, bias: torch.Tensor | None, *geometry
) -> ConvProblem:
    """The 2-D problem of a causal conv1d from its H = 1 views and (stride, (0, reach), dilation,
    groups): the padding at the start only, so the output is as long as the input, in its layout."""
    return dataclasses.replace(problem_from_tensors(input_2d, weight_2d, bias, *geometry), padding_end=(0, 0))


def reference_causal_conv1d(x, weight, bias=None, activation=None, *, dilation=1) -> torch.Tensor:
    """The computation in torch alone, as Mamba writes it: the padded conv1d, the crop, the SiLU."""
    taps = weight.shape[-1]
    output = F.conv1d(x, weight, bias, padding=(taps - 1) * dilation, dilation=dilation, groups=x.shape[-2])
    output = output[..., : x.shape[-1]]
    return output if activation is None else F.silu(output)
