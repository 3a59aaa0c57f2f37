"""`tritonconv.causal_conv1d_update`, the decode step, against a float64 reference written from the
causal-conv1d package's semantics (not from tritonconv's kernels): shifting and circular states,
state indices with padded rows in a cache larger than the batch, mixed precision, both layouts, a
decode loop against one causal_conv1d over the whole sequence, and the compiled step."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import tritonconv

# The bound of one output: W products of fp32 operands rounded to the output's dtype.
OUTPUT_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def reference_update(x, state, weight, bias=None, silu=False, cache_seqlens=None, indices=None):
    """(out in float64, the new state) of one step, from the semantics: x (B, D, T), state (N, D, S)."""
    batch, _, tokens = x.shape
    width, slots = weight.shape[-1], state.shape[-1]
    out = torch.zeros(x.shape, dtype=torch.float64)
    new = state.clone()
    for b in range(batch):
        line = b if indices is None else int(indices[b])
        if line < 0:
            continue
        old = state[line].double()
        if cache_seqlens is None:
            history = old[:, slots - (width - 1) :]
            new[line] = torch.cat([state[line], x[b].to(state.dtype)], dim=-1)[:, -slots:]
        else:
            seen = int(cache_seqlens[b])
            history = torch.stack([old[:, (seen - (width - 1) + i) % slots] for i in range(width - 1)], -1) \
                if width > 1 else old[:, :0]  # fmt: skip
            for i in range(tokens):  # in order: of more than S tokens the last S stay
                new[line][:, (seen + i) % slots] = x[b][:, i].to(state.dtype)
        window = torch.cat([history, x[b].double()], dim=-1)
        for t in range(tokens):
            out[b, :, t] = (window[:, t : t + width] * weight.double()).sum(-1)
        if bias is not None:
            out[b] += bias.double()[:, None]
        if silu:
            out[b] = F.silu(out[b])
    return out, new


def _check_step(x, state, weight, bias, silu, cache_seqlens=None, indices=None):
    want_out, want_state = reference_update(x, state, weight, bias, silu, cache_seqlens, indices)
    got_state = state.clone()
    got = tritonconv.causal_conv1d_update(x, got_state, weight, bias, "silu" if silu else None,
                                          cache_seqlens=cache_seqlens, conv_state_indices=indices)  # fmt: skip
    assert got.shape == x.shape and got.dtype == x.dtype and got.stride() == x.stride()
    scale = want_out.abs().max().clamp_min(1.0)
    error = float((got.double() - want_out).abs().max() / scale)
    assert error <= OUTPUT_TOLERANCE[x.dtype], error
    assert torch.equal(got_state, want_state), "the state must be exactly the reference's"
    return got


@pytest.mark.parametrize("width", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("circular", [False, True], ids=["shifting", "circular"])
def test_one_step_and_the_state_match_the_reference(width, circular):
    channels = 12  # not a multiple of 8
    for tokens, extra_slots, padded in itertools.product((1, 4, 5), (0, 3, 9), (False, True)):
        slots = width - 1 + extra_slots if width > 1 else 1 + extra_slots
        batch, lines = 3, 5 if padded else 3
        x = torch.randn(batch, channels, tokens)
        state = torch.randn(lines, channels, slots)
        weight, bias = torch.randn(channels, width), torch.randn(channels)
        seqlens = torch.tensor([0, 7, slots + 2], dtype=torch.int32) if circular else None
        indices = torch.tensor([4, -1, 1], dtype=torch.int32) if padded else None
        got = _check_step(x, state, weight, bias, silu=tokens == 4, cache_seqlens=seqlens, indices=indices)
        if padded:
            assert torch.equal(got[1], torch.zeros_like(got[1])), "a padded row's output is exactly 0"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_mixed_precision_and_both_layouts(dtype):
    batch, channels, width, slots = 2, 20, 4, 6
    weight, bias = torch.randn(channels, 1, width), torch.randn(channels)  # fp32, the (D, 1, W) form
    for tokens in (1, 3):
        channels_last = torch.randn(batch, tokens, channels).to(dtype).transpose(1, 2)  # (B, L, D) storage
        state = torch.randn(batch, slots, channels).to(dtype).transpose(1, 2)  # a strided state
        _check_step(channels_last, state, weight.squeeze(1), bias, silu=True)
        got = tritonconv.causal_conv1d_update(channels_last, state.clone(), weight, bias, "swish")
        assert got.stride() == channels_last.stride()
        x = torch.randn(batch, channels, tokens).to(dtype)
        _check_step(x, torch.randn(batch, channels, slots).to(dtype), weight.squeeze(1).to(dtype), None, silu=False)
    one = torch.randn(batch, channels).to(dtype)  # (B, D): one token, the output (B, D)
    state = torch.randn(batch, channels, slots).to(dtype)
    want = reference_update(one.unsqueeze(-1), state, weight.squeeze(1), bias)[0].squeeze(-1)
    got = tritonconv.causal_conv1d_update(one, state, weight, bias)
    assert got.shape == one.shape and float((got.double() - want).abs().max()) <= OUTPUT_TOLERANCE[dtype] * 10


def test_a_state_cache_larger_than_the_batch_keeps_untouched_lines_bit_identical():
    lines, channels, width, slots = 9, 8, 4, 5
    cache = torch.randn(lines, channels, slots)
    before = cache.clone()
    x = torch.randn(4, channels, 2)
    indices = torch.tensor([6, -1, 0, 3], dtype=torch.int32)
    weight = torch.randn(channels, width)
    want_out, want_cache = reference_update(x, before, weight, indices=indices)
    got = tritonconv.causal_conv1d_update(x, cache, weight, conv_state_indices=indices)
    assert torch.equal(cache, want_cache)
    untouched = [line for line in range(lines) if line not in (6, 0, 3)]
    assert torch.equal(cache[untouched], before[untouched])
    torch.testing.assert_close(got.double(), want_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("circular", [False, True], ids=["shifting", "circular"])
def test_a_decode_loop_equals_one_causal_conv1d_over_the_whole_sequence(circular):
    batch, channels, width, length = 2, 10, 4, 11
    x = torch.randn(batch, channels, length, dtype=torch.float64).float()
    weight, bias = torch.randn(channels, 1, width), torch.randn(channels)
    whole = F.silu(
        F.conv1d(x.double(), weight.double(), bias.double(), padding=width - 1, groups=channels)[..., :length]
    )
    slots = width + 2 if circular else width - 1
    state = torch.zeros(batch, channels, slots)
    seqlens = torch.zeros(batch, dtype=torch.int32)
    steps, start = [], 0
    for tokens in (1, 4, 1, 5):  # steps of several tokens and of one
        chunk = x[..., start : start + tokens]
        steps.append(tritonconv.causal_conv1d_update(chunk, state, weight, bias, "silu",
                                                     cache_seqlens=seqlens if circular else None))  # fmt: skip
        seqlens += tokens
        start += tokens
    torch.testing.assert_close(torch.cat(steps, -1).double(), whole, rtol=1e-5, atol=1e-5)


def test_wrong_arguments_raise_with_the_sizes_in_the_message():
    x, state, weight = torch.randn(2, 8, 1), torch.randn(2, 8, 3), torch.randn(8, 4)
    with pytest.raises(RuntimeError, match=r"S >= W - 1 = 3; got \[2, 8, 2\]"):
        tritonconv.causal_conv1d_update(x, state[..., :2], weight)
    with pytest.raises(RuntimeError, match="D = 8"):
        tritonconv.causal_conv1d_update(x, state, torch.randn(6, 4))
    with pytest.raises(RuntimeError, match="first size must be the batch, 2; got 3"):
        tritonconv.causal_conv1d_update(x, torch.randn(3, 8, 3), weight)
    with pytest.raises(RuntimeError, match=r"cache_seqlens must be \(2,\) int32"):
        tritonconv.causal_conv1d_update(x, state, weight, cache_seqlens=torch.zeros(2))
    with pytest.raises(ValueError, match="activation"):
        tritonconv.causal_conv1d_update(x, state, weight, activation="relu")


def test_a_compiled_decode_step_updates_the_state_as_eager_does():
    torch._dynamo.reset()
    channels, width, slots = 8, 4, 3
    weight, bias = torch.randn(channels, width), torch.randn(channels)

    def step(x, state):
        return tritonconv.causal_conv1d_update(x, state, weight, bias, "silu")

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    eager_state, compiled_state = torch.randn(2, channels, slots), None
    compiled_state = eager_state.clone()
    for _ in range(3):
        x = torch.randn(2, channels)
        torch.testing.assert_close(compiled(x, compiled_state), step(x, eager_state), rtol=0, atol=0)
        assert torch.equal(compiled_state, eager_state)


def test_an_exported_decode_step_holds_the_op_and_updates_the_state():
    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.bias = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(8))

        def forward(self, x, state):
            return tritonconv.causal_conv1d_update(x, state, self.weight, self.bias, "silu")

    step, x, state = Step(), torch.randn(2, 8), torch.randn(2, 8, 3)
    exported = torch.export.export(step, (x, state.clone()))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert "tritonconv.causal_conv1d_update.default" in targets
    exported_state, eager_state = state.clone(), state.clone()
    assert torch.equal(exported.module()(x, exported_state), step(x, eager_state))
    assert torch.equal(exported_state, eager_state) and not torch.equal(eager_state, state)
