"""The prefill of an inference engine: the causal depthwise conv1d of variable-length sequences
packed along x (C, total_tokens), each starting from its line of a state cache, which it leaves
holding its last inputs, in one launch for all sequences.

Sequence i is tokens [starts[i], starts[i+1]) and uses state line `indices[i]` (i without
indices). A line equal to PAD_SLOT, or outside the cache's N lines, marks a padded entry: its
outputs are 0 and its state is neither read nor written. With `has_state[i]` set, the W - 1 inputs
before the sequence are the line's last W - 1 columns; otherwise they are zeros. The line then
becomes the last S columns of cat(line or zeros, the sequence), as the shifting decode step leaves
it, so `causal_conv1d_update` continues from it.

The grid is aligned to sequences without reading their lengths on the host: sequence i owns
programs [a_i, a_{i+1}) with a_i = starts[i] // BLOCK_L + i, which is at least as many as its
cdiv(length, BLOCK_L) blocks need, and a_nseq = total // BLOCK_L + nseq bounds the grid. A program
finds its sequence by a binary search over a_i, takes block `pid - a_i` of it (nothing where the
sequence is shorter), and only a sequence's block 0 touches its state line: it reads the history
its first W - 1 outputs need and the old columns the new state keeps, then (after a barrier, so
every read of the line comes before any write) writes the line. The other blocks read only x of
their own sequence (BLOCK_L >= W - 1), so no two programs share a line.
"""

import triton
import triton.language as tl

from .common import bias_then_silu, cache_line


@triton.jit
def _causal_varlen_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, state_ptr, starts_ptr, indices_ptr, has_state_ptr,
    C, SEQS, S, N, PAD_SLOT, search_steps,
    x_strides, w_strides, stride_bias, y_strides, state_strides,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_INDICES: tl.constexpr,
    HAS_INITIAL: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    stride_xc, stride_xt = x_strides
    stride_wc, stride_ws = w_strides
    stride_yc, stride_yt = y_strides
    stride_sn, stride_sc, stride_ss = state_strides
    pid = tl.program_id(0)
    # The sequence of this program: the last i with a_i <= pid (a_0 = 0).
    low = pid * 0
    high = SEQS - 1
    for _ in range(search_steps):
        middle = (low + high + 1) // 2
        first = tl.load(starts_ptr + middle) // BLOCK_L + middle
        low = tl.where(first <= pid, middle, low)
        high = tl.where(first <= pid, high, middle - 1)
    sequence = low.to(tl.int64)
    start = tl.load(starts_ptr + sequence).to(tl.int64)
    end = tl.load(starts_ptr + sequence + 1).to(tl.int64)
    block = pid - (start // BLOCK_L + sequence)

    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    line, line_c, live_c = cache_line(sequence, indices_ptr, mask_c, N, HAS_INDICES)
    live_c = live_c & (line_c != PAD_SLOT)
    if HAS_INITIAL:  # the channels whose history comes from the line
        from_state_c = live_c & (tl.load(has_state_ptr + sequence + tl.zeros((BLOCK_C,), dtype=tl.int64)) != 0)
    else:
        from_state_c = offs_c < 0  # none
    state_line = state_ptr + line * stride_sn + (offs_c * stride_sc)[None, :]

    offs_t = start + block * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_t = (offs_t >= start) & (offs_t < end)  # a malformed query_start_loc reads nothing outside its sequence
    acc = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        source = offs_t - (WIDTH - 1 - k)
        in_sequence = source >= start
        x = tl.load(x_ptr + (source * stride_xt)[:, None] + (offs_c * stride_xc)[None, :],
                    mask=(mask_t & in_sequence)[:, None] & live_c[None, :], other=0.0)  # fmt: skip
        history = tl.load(state_line + ((S + source - start) * stride_ss)[:, None],
                          mask=(mask_t & ~in_sequence)[:, None] & from_state_c[None, :], other=0.0)  # fmt: skip
        value = tl.where(in_sequence[:, None], x.to(tl.float32), history.to(tl.float32))
        weight = tl.load(w_ptr + offs_c * stride_wc + k * stride_ws, mask=mask_c, other=0.0).to(tl.float32)
        acc += value * weight[None, :]
    acc = bias_then_silu(acc, bias_ptr, offs_c, stride_bias, mask_c, HAS_BIAS, SILU)
    acc = tl.where(live_c[None, :], acc, 0.0)

    # Block 0's new state: column j is element length + j of cat(old line or zeros, the sequence).
    offs_s = tl.arange(0, BLOCK_S)
    first_block_c = (block + tl.zeros((BLOCK_C,), dtype=tl.int64)) == 0
    write_c = live_c & first_block_c
    taken = end - start + offs_s
    from_x = taken >= S
    mask_new = (offs_s < S)[:, None] & write_c[None, :]
    new_x = tl.load(x_ptr + ((start + taken - S) * stride_xt)[:, None] + (offs_c * stride_xc)[None, :],
                    mask=mask_new & from_x[:, None], other=0.0)  # fmt: skip
    old = tl.load(state_line + (taken * stride_ss)[:, None],
                  mask=mask_new & (~from_x)[:, None] & from_state_c[None, :], other=0.0)  # fmt: skip
    new_state = tl.where(from_x[:, None], new_x.to(old.dtype), old)
    tl.debug_barrier()  # every read of the line above comes before any write below

    y_offs = (offs_t * stride_yt)[:, None] + (offs_c * stride_yc)[None, :]
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_t[:, None] & mask_c[None, :])
    tl.store(state_line + (offs_s * stride_ss)[:, None], new_state.to(state_ptr.dtype.element_ty), mask=mask_new)
