"""`tritonconv.causal_conv1d_varlen`, an inference engine's packed prefill, against per-sequence
float64 references written from the semantics (not from tritonconv's kernels): sequence i is
x[:, qsl[i]:qsl[i+1]], starts from state line cache_indices[i] where has_initial_state[i] (else
zeros), leaves the line holding the last S columns of cat(line or zeros, sequence); a pad_slot_id
entry writes zeros and touches no line. Then decode continues from the written states, eagerly and
in a compiled (fullgraph) prefill-then-decode loop."""

import pytest
import torch
import torch.nn.functional as F

import tritonconv

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def reference(x, weight, bias, starts, states, indices, has_state, silu, pad_slot=-1):
    """(out in float64, the new state cache) sequence by sequence."""
    channels, width, slots = x.shape[0], weight.shape[-1], states.shape[-1]
    out = torch.zeros(x.shape, dtype=torch.float64)
    new = states.clone()
    for i in range(starts.shape[0] - 1):
        begin, end = int(starts[i]), int(starts[i + 1])
        line = i if indices is None else int(indices[i])
        if line == pad_slot or not 0 <= line < states.shape[0]:
            continue
        initial = has_state is not None and bool(has_state[i])
        history = states[line] if initial else torch.zeros(channels, slots, dtype=states.dtype)
        extended = torch.cat([history.double(), x[:, begin:end].double()], dim=-1)
        for t in range(end - begin):
            window = extended[:, slots - (width - 1) + t : slots + t + 1]
            value = (window * weight.double()).sum(-1) + (0 if bias is None else bias.double())
            out[:, begin + t] = F.silu(value) if silu else value
        new[line] = torch.cat([history, x[:, begin:end].to(states.dtype)], dim=-1)[:, -slots:]
    return out, new


def _x(channels, total, dtype, layout):
    if layout == "td":  # tokens outermost, channels innermost: the (total, D) activations seen as (D, total)
        return torch.randn(total, channels).to(dtype).t()
    return torch.randn(channels, total).to(dtype)


def _starts(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


@pytest.mark.parametrize("width", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("layout", ["dt", "td"])
def test_packed_sequences_match_per_sequence_references_and_write_their_states(width, layout):
    channels, lines = 11, 9
    lengths = [3, 0, 1, 70, width - 1, 6]  # empty, shorter than W-1, across a 64-token block
    starts = _starts(lengths)
    x = _x(channels, int(starts[-1]), torch.float32, layout)
    weight, bias = torch.randn(channels, width), torch.randn(channels)
    for slots in (width - 1, width + 3):
        states = torch.randn(lines, channels, slots)
        indices = torch.tensor([4, 0, -1, 8, 2, 6], dtype=torch.int32)  # a padded entry; lines 1, 3, 5, 7 unused
        for has_state in (None, torch.tensor([True, True, True, False, True, False])):
            cache = states.clone()
            out = tritonconv.causal_conv1d_varlen(x, weight, bias, "silu", query_start_loc=starts, conv_states=cache,
                                                  cache_indices=indices, has_initial_state=has_state)  # fmt: skip
            want, want_cache = reference(x, weight, bias, starts, states, indices, has_state, silu=True)
            assert out.stride() == x.stride(), "the output keeps x's layout"
            error = float((out.double() - want).abs().max() / want.abs().max())
            assert error <= TOLERANCE[torch.float32], f"S {slots}, initial states {has_state is not None}"
            assert torch.equal(cache, want_cache), "lines written exactly, unused lines bit-identical"
            padded = slice(int(starts[2]), int(starts[3]))
            assert torch.equal(out[:, padded], torch.zeros_like(out[:, padded]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_mixed_precision_and_a_custom_pad_slot_without_indices(dtype):
    channels, width, slots = 10, 4, 3
    lengths = [5, 2, 9]
    starts = _starts(lengths)
    x = _x(channels, int(starts[-1]), dtype, "td")
    weight, bias = torch.randn(channels, 1, width), torch.randn(channels)  # fp32, as the engines keep them
    for state_dtype in (dtype, torch.float32):
        states = torch.randn(3, channels, slots).to(state_dtype)
        has_state = torch.tensor([1, 0, 1], dtype=torch.int32)
        cache = states.clone()
        out = tritonconv.causal_conv1d_varlen(x, weight, bias, None, query_start_loc=starts, conv_states=cache,
                                              has_initial_state=has_state)  # fmt: skip
        want, want_cache = reference(x, weight[:, 0], bias, starts, states, None, has_state, silu=False)
        assert out.dtype == dtype
        assert float((out.double() - want).abs().max() / want.abs().max()) <= TOLERANCE[dtype]
        assert torch.equal(cache, want_cache)
    indices = torch.tensor([0, 7, 2], dtype=torch.int32)  # 7 is this engine's padding slot
    cache = states.clone()
    tritonconv.causal_conv1d_varlen(x, weight, bias, query_start_loc=starts, conv_states=cache, cache_indices=indices,
                                    pad_slot_id=7)  # fmt: skip
    _, want_cache = reference(x, weight[:, 0], bias, starts, states, indices, None, silu=False, pad_slot=7)
    assert torch.equal(cache, want_cache)


def _prefill_then_decode(x, tokens, weight, bias, starts, cache, indices):
    """A prefill of packed prompts, then one decode step per column of `tokens` (B, D, steps)."""
    outputs = [tritonconv.causal_conv1d_varlen(x, weight, bias, "silu", query_start_loc=starts, conv_states=cache,
                                               cache_indices=indices)]  # fmt: skip
    for step in range(tokens.shape[-1]):
        outputs.append(tritonconv.causal_conv1d_update(tokens[..., step], cache, weight, bias, "silu",
                                                       conv_state_indices=indices))  # fmt: skip
    return outputs


def test_decoding_after_the_prefill_equals_one_causal_conv1d_over_each_whole_sequence():
    channels, width, steps = 7, 4, 3
    lengths = [5, 1, 12]
    starts = _starts(lengths)
    x = torch.randn(channels, int(starts[-1]))
    tokens = torch.randn(3, channels, steps)
    weight, bias = torch.randn(channels, width), torch.randn(channels)
    cache, indices = torch.randn(5, channels, width - 1), torch.tensor([3, 0, 4], dtype=torch.int32)
    outputs = _prefill_then_decode(x, tokens, weight, bias, starts, cache, indices)
    for i in range(3):
        whole = torch.cat([x[:, int(starts[i]) : int(starts[i + 1])], tokens[i]], dim=-1)
        want = tritonconv.causal_conv1d(whole[None], weight, bias, "silu")[0]
        got = torch.cat([outputs[0][:, int(starts[i]) : int(starts[i + 1])], *(o[i, :, None] for o in outputs[1:])], -1)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_compiled_prefill_then_decode_loop_equals_eager():
    channels, width, steps = 6, 4, 3
    starts = _starts([4, 7])
    x, tokens = torch.randn(channels, 11), torch.randn(2, channels, steps)
    weight, bias = torch.randn(channels, width), torch.randn(channels)
    indices = torch.tensor([1, 0], dtype=torch.int32)
    eager_cache = torch.randn(2, channels, width - 1)
    compiled_cache = eager_cache.clone()
    compiled = torch.compile(_prefill_then_decode, backend="aot_eager", fullgraph=True)
    got = compiled(x, tokens, weight, bias, starts, compiled_cache, indices)
    want = _prefill_then_decode(x, tokens, weight, bias, starts, eager_cache, indices)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(compiled_cache, eager_cache)


def test_arguments_are_checked_with_the_sizes_in_the_message():
    x, weight, starts, states = torch.randn(4, 6), torch.randn(4, 3), _starts([2, 4]), torch.zeros(2, 4, 2)
    with pytest.raises(RuntimeError, match=r"conv_states must be \(N, D, S\).*S >= W - 1 = 2"):
        tritonconv.causal_conv1d_varlen(x, weight, query_start_loc=starts, conv_states=torch.zeros(2, 4, 1))
    with pytest.raises(RuntimeError, match=r"cache_indices must be \(2,\) int32"):
        tritonconv.causal_conv1d_varlen(x, weight, query_start_loc=starts, conv_states=states,
                                        cache_indices=torch.zeros(3, dtype=torch.int32))  # fmt: skip
    with pytest.raises(RuntimeError, match="needs a line per sequence, 2; got 1"):
        tritonconv.causal_conv1d_varlen(x, weight, query_start_loc=starts, conv_states=torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="activation"):
        tritonconv.causal_conv1d_varlen(x, weight, None, "relu", query_start_loc=starts, conv_states=states)


def test_an_exported_prefill_holds_the_op_and_updates_the_cache():
    class Prefill(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.bias = torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(6))

        def forward(self, x, starts, cache, indices):
            return tritonconv.causal_conv1d_varlen(x, self.weight, self.bias, "silu", query_start_loc=starts,
                                                   conv_states=cache, cache_indices=indices)  # fmt: skip

    prefill, x, starts = Prefill(), torch.randn(6, 9), _starts([4, 5])
    cache, indices = torch.randn(3, 6, 3), torch.tensor([2, 0], dtype=torch.int32)
    exported = torch.export.export(prefill, (x, starts, cache.clone(), indices))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert "tritonconv.causal_conv1d_varlen.default" in targets
    exported_cache, eager_cache = cache.clone(), cache.clone()
    assert torch.equal(exported.module()(x, starts, exported_cache, indices), prefill(x, starts, eager_cache, indices))
    assert torch.equal(exported_cache, eager_cache) and not torch.equal(eager_cache, cache)


def test_a_compiled_training_style_prefill_with_final_states_then_decode_equals_eager():
    channels, width = 5, 3
    weight, bias = torch.randn(channels, width), torch.randn(channels)

    def generate(prompt, tokens):
        out, state = tritonconv.causal_conv1d(prompt, weight, bias, "silu", return_final_states=True)
        steps = [tritonconv.causal_conv1d_update(tokens[..., i], state, weight, bias, "silu") for i in range(2)]
        return out, torch.stack(steps, -1), state

    prompt, tokens = torch.randn(2, channels, 7), torch.randn(2, channels, 2)
    compiled = torch.compile(generate, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(prompt, tokens), generate(prompt, tokens), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
