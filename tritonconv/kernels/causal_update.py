"""The decode step of a causal depthwise conv1d (Mamba-style models): a few new tokens per sequence
against a state of the last inputs, the state updated in place.

One program takes one batch row and BLOCK_D channels. Its state line is row b of the state cache,
or `indices[b]` (a negative index is a padded row: the output is 0 and the state is not touched; an
index at or past the cache's N lines is treated so too, so nothing outside the cache is touched).
The window of output t is the W - 1 inputs before it (from the state while t + k - (W - 1) < 0,
then from the new tokens x), times the weight, in fp32, plus the bias, then SiLU if asked.

Two state layouts:
- shifting (CIRCULAR False): the window's history is the state's last W - 1 columns, and the new
  state is cat(state, x)[..., -S:] (every column moves T places to the left);
- a circular buffer (CIRCULAR True): with `seqlens[b]` = cs tokens seen, the history is read at
  (cs - (W - 1) + i) mod S and token i is written at (cs + i) mod S; nothing moves.
Every load of the state happens before any store (`tl.debug_barrier` between them), so the reads
see the old state whichever thread of the program writes which column.
"""

import triton
import triton.language as tl

from .common import bias_then_silu, cache_line


@triton.jit
def _causal_conv1d_update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, seqlens_ptr, indices_ptr,
    D, T, S, N,
    x_strides, state_strides, w_strides, stride_bias, out_strides,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, CIRCULAR: tl.constexpr,
    HAS_INDICES: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    stride_xb, stride_xd, stride_xt = x_strides
    stride_sn, stride_sd, stride_ss = state_strides
    stride_wd, stride_wk = w_strides
    stride_ob, stride_od, stride_ot = out_strides
    row = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    # A padded row (negative index, or one past the cache): output 0, state untouched.
    line, _, live_d = cache_line(row, indices_ptr, mask_d, N, HAS_INDICES)  # live_d: state read and written
    state_row = state_ptr + line * stride_sn + (offs_d * stride_sd)[None, :]
    x_row = x_ptr + row * stride_xb + (offs_d * stride_xd)[None, :]
    if CIRCULAR:
        seen = tl.load(seqlens_ptr + row).to(tl.int64)

    offs_t = tl.arange(0, BLOCK_T)
    mask_out = (offs_t < T)[:, None] & mask_d[None, :]
    mask_read = (offs_t < T)[:, None] & live_d[None, :]
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        position = offs_t + (k - (WIDTH - 1))  # relative to the first new token
        from_x = position >= 0
        x_value = tl.load(x_row + (position * stride_xt)[:, None], mask=mask_read & from_x[:, None], other=0.0)
        if CIRCULAR:
            slot = (seen + position) % S
            slot = tl.where(slot < 0, slot + S, slot)
        else:
            slot = S + position
        state_value = tl.load(state_row + (slot * stride_ss)[:, None], mask=mask_read & (~from_x)[:, None], other=0.0)
        value = tl.where(from_x[:, None], x_value.to(tl.float32), state_value.to(tl.float32))
        weight = tl.load(w_ptr + offs_d * stride_wd + k * stride_wk, mask=mask_d, other=0.0).to(tl.float32)
        acc += value * weight[None, :]
    acc = bias_then_silu(acc, bias_ptr, offs_d, stride_bias, mask_d, HAS_BIAS, SILU)
    acc = tl.where(live_d[None, :], acc, 0.0)

    offs_s = tl.arange(0, BLOCK_S)
    if CIRCULAR:  # token i goes to slot (cs + i) mod S; of more than S tokens only the last S stay
        write = (offs_s < T) & (offs_s >= T - S)
        slot = (seen + offs_s) % S
        slot = tl.where(slot < 0, slot + S, slot)
        mask_new = write[:, None] & live_d[None, :]
        new_state = tl.load(x_row + (offs_s * stride_xt)[:, None], mask=mask_new, other=0.0)
    else:  # column j takes what was T places to its right: the old state's, then the new tokens
        source = offs_s + T
        from_state = source < S
        slot = offs_s
        mask_new = (offs_s < S)[:, None] & live_d[None, :]
        old = tl.load(state_row + (source * stride_ss)[:, None], mask=mask_new & from_state[:, None], other=0.0)
        new_x = tl.load(x_row + ((source - S) * stride_xt)[:, None], mask=mask_new & (~from_state)[:, None], other=0.0)
        new_state = tl.where(from_state[:, None], old, new_x.to(old.dtype))
    tl.debug_barrier()  # every read of the state above happens before any write below

    out_row = out_ptr + row * stride_ob + (offs_d * stride_od)[None, :]
    tl.store(out_row + (offs_t * stride_ot)[:, None], acc.to(out_ptr.dtype.element_ty), mask=mask_out)
    tl.store(state_row + (slot * stride_ss)[:, None], new_state.to(state_ptr.dtype.element_ty), mask=mask_new)
