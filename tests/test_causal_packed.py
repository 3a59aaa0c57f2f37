"""`tritonconv.causal_conv1d(..., seq_idx=...)`: several sequences packed in one row, against a
float64 reference written from the causal-conv1d package's semantics (a tap at t reads x[t - (W-1-k)
* dil] only where seq_idx there equals seq_idx[t], nothing before position 0; padding, seq_idx < 0,
outputs exactly 0), not from tritonconv's kernels. Every width the package serves, both layouts,
mixed precision, dilation, the final states, gradients and gradcheck."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import tritonconv

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def reference(x, weight, bias, seq_idx, silu=False, dilation=1):
    """The output in float64, position by position from the definition; x (B, D, L), weight (D, W)."""
    batch, channels, length = x.shape
    width = weight.shape[-1]
    x, weight = x.double(), weight.double()
    rows = []
    for b in range(batch):
        columns = []
        for t in range(length):
            value = torch.zeros(channels, dtype=torch.float64) if bias is None else bias.double()
            for k in range(width):
                source = t - (width - 1 - k) * dilation
                if source >= 0 and seq_idx[b, source] == seq_idx[b, t]:
                    value = value + x[b, :, source] * weight[:, k]
            value = F.silu(value) if silu else value
            columns.append(value * 0 if seq_idx[b, t] < 0 else value)
        rows.append(torch.stack(columns, -1) if columns else x.new_zeros(channels, 0))
    return torch.stack(rows)


def packed_ids(batch, length, generator_seed=0):
    """(B, L) int32 sequence numbers: runs of random lengths, some padding (-1) in the middle and at the end."""
    generator = torch.Generator().manual_seed(generator_seed)
    rows = []
    for _ in range(batch):
        ids, number = [], 0
        while len(ids) < length:
            run = int(torch.randint(1, 6, (1,), generator=generator))
            padding = int(torch.randint(0, 4, (1,), generator=generator)) == 0
            ids += [-1 if padding else number] * run
            number += 0 if padding else 1
        rows.append(ids[:length])
    return torch.tensor(rows, dtype=torch.int32)


def _x(batch, channels, length, dtype, layout):
    if layout == "blc":  # the (B, L, D) storage Mamba keeps, seen as (B, D, L)
        return torch.randn(batch, length, channels).to(dtype).transpose(1, 2)
    return torch.randn(batch, channels, length).to(dtype)


def _error(got, want):
    return float((got.detach().double() - want.detach()).abs().max() / want.detach().abs().max().clamp_min(1.0))


@pytest.mark.parametrize("width", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("layout", ["bcl", "blc"])
def test_taps_stop_at_sequence_boundaries_and_padding_outputs_zero(width, layout):
    channels, length = 13, 19  # D not a multiple of 8, an odd length
    x = _x(2, channels, length, torch.float32, layout)
    weight, bias = torch.randn(channels, width), torch.randn(channels)
    seq_idx = packed_ids(2, length, width)
    for silu in (False, True):
        out = tritonconv.causal_conv1d(x, weight, bias, "silu" if silu else None, seq_idx=seq_idx)
        assert out.shape == x.shape and out.stride() == x.stride(), "the output keeps x's layout"
        assert _error(out, reference(x, weight, bias, seq_idx, silu)) <= TOLERANCE[torch.float32]
        padding = (seq_idx < 0)[:, None, :].expand_as(out)
        assert padding.any() and torch.equal(out[padding], torch.zeros_like(out[padding])), "padding is exactly 0"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("weight_dtype", ["fp32", "matching"])
def test_mixed_precision_gradients_in_each_operands_dtype(dtype, weight_dtype):
    channels, width, length = 10, 4, 17
    wide = torch.float32 if weight_dtype == "fp32" else dtype
    x = _x(2, channels, length, dtype, "blc").requires_grad_()
    weight = torch.randn(channels, 1, width).to(wide).requires_grad_()
    bias = torch.randn(channels).to(wide).requires_grad_()
    seq_idx = packed_ids(2, length, 7)
    out = tritonconv.causal_conv1d(x, weight, bias, "silu", seq_idx=seq_idx)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    assert (out.dtype, x.grad.dtype, weight.grad.dtype, bias.grad.dtype) == (dtype, dtype, wide, wide)
    leaves = [t.detach().double().requires_grad_() for t in (x, weight.squeeze(1), bias)]
    want = reference(*leaves, seq_idx, silu=True)
    (want * grad.double()).sum().backward()
    assert _error(out, want) <= TOLERANCE[dtype]
    for got, expected, name in zip((x.grad, weight.grad.squeeze(1), bias.grad), leaves, "xwb", strict=True):
        assert _error(got, expected.grad) <= 8 * TOLERANCE[dtype], f"d{name}"


@pytest.mark.parametrize("layout", ["bcl", "blc"])
def test_fp32_gradients_with_dilation_and_final_states(layout):
    channels, width, length = 9, 3, 15
    x = _x(2, channels, length, torch.float32, layout).requires_grad_()
    weight, bias = torch.randn(channels, width, requires_grad=True), torch.randn(channels, requires_grad=True)
    seq_idx = packed_ids(2, length, 3)
    for dilation in (1, 2):
        for tensor in (x, weight, bias):
            tensor.grad = None
        if dilation == 1:  # the final states are x's last W-1 columns, whatever the sequences
            out, final = tritonconv.causal_conv1d(x, weight, bias, seq_idx=seq_idx, return_final_states=True)
            assert torch.equal(final, x.detach()[..., -(width - 1) :])
        else:
            out = tritonconv.causal_conv1d(x, weight, bias, seq_idx=seq_idx, dilation=dilation)
        grad = torch.randn_like(out)
        (out * grad).sum().backward()
        leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
        want = reference(*leaves, seq_idx, dilation=dilation)
        (want * grad.double()).sum().backward()
        assert _error(out, want) <= TOLERANCE[torch.float32]
        for got, expected, name in zip((x.grad, weight.grad, bias.grad), leaves, "xwb", strict=True):
            assert _error(got, expected.grad) <= 4 * TOLERANCE[torch.float32], f"d{name}, dilation {dilation}"


def test_gradcheck_in_float64():
    channels, width, length = 3, 4, 9
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, -1, 2, 2, 2]], dtype=torch.int32)
    inputs = [torch.randn(1, channels, length, dtype=torch.float64, requires_grad=True),
              torch.randn(channels, width, dtype=torch.float64, requires_grad=True),
              torch.randn(channels, dtype=torch.float64, requires_grad=True)]  # fmt: skip
    for silu in (None, "silu"):
        assert gradcheck(lambda x, w, b, silu=silu: tritonconv.causal_conv1d(x, w, b, silu, seq_idx=seq_idx), inputs)


def test_one_sequence_per_row_is_the_plain_causal_conv1d_and_unbatched_x_works():
    x, weight, bias = torch.randn(2, 6, 11), torch.randn(6, 3), torch.randn(6)
    one = torch.zeros(2, 11, dtype=torch.int32)
    torch.testing.assert_close(tritonconv.causal_conv1d(x, weight, bias, "silu", seq_idx=one),
                               tritonconv.causal_conv1d(x, weight, bias, "silu"))  # fmt: skip
    seq_idx = packed_ids(1, 11, 5)[0]
    unbatched = tritonconv.causal_conv1d(x[0], weight, bias, seq_idx=seq_idx)
    assert _error(unbatched, reference(x[:1], weight, bias, seq_idx[None])[0]) <= TOLERANCE[torch.float32]


def test_arguments_are_checked_with_the_sizes_in_the_message():
    x, weight = torch.randn(2, 4, 6), torch.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"seq_idx must be \[2, 6\] int32"):
        tritonconv.causal_conv1d(x, weight, seq_idx=torch.zeros(2, 5, dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"seq_idx must be \[2, 6\] int32"):
        tritonconv.causal_conv1d(x, weight, seq_idx=torch.zeros(2, 6))
    with pytest.raises(RuntimeError, match="depthwise weight"):
        tritonconv.causal_conv1d(x, torch.randn(5, 3), seq_idx=torch.zeros(2, 6, dtype=torch.int32))


def test_a_compiled_call_holds_the_packed_op_and_its_backward():
    x = torch.randn(2, 5, 12, requires_grad=True)
    weight = torch.randn(5, 4, requires_grad=True)
    seq_idx = packed_ids(2, 12, 11)

    def step(x, weight):
        return tritonconv.causal_conv1d(x, weight, None, "silu", seq_idx=seq_idx)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = compiled(x, weight)
    got.square().sum().backward()
    grads = x.grad.clone(), weight.grad.clone()
    x.grad = weight.grad = None
    want = step(x, weight)
    want.square().sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(grads, (x.grad, weight.grad), rtol=0, atol=0)


def test_the_packages_name_takes_its_positional_order():
    x, weight, bias = torch.randn(2, 6, 11), torch.randn(6, 3), torch.randn(6)
    seq_idx = packed_ids(2, 11, 9)
    out, final = tritonconv.causal_conv1d_fn(x, weight, bias, seq_idx, None, True, None, "silu")
    want = tritonconv.causal_conv1d(x, weight, bias, "silu", seq_idx=seq_idx)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert torch.equal(final, x[..., -2:])


def test_each_gradient_alone():
    x, weight, bias = torch.randn(2, 5, 9), torch.randn(5, 3), torch.randn(5)
    seq_idx = packed_ids(2, 9, 4)
    leaves = [t.double().requires_grad_() for t in (x, weight, bias)]
    reference(*leaves, seq_idx, silu=True).sum().backward()
    for index in range(3):
        operands = [t.clone().requires_grad_(i == index) for i, t in enumerate((x, weight, bias))]
        tritonconv.causal_conv1d(*operands, "silu", seq_idx=seq_idx).sum().backward()
        assert [t.grad is not None for t in operands] == [i == index for i in range(3)]
        assert _error(operands[index].grad, leaves[index].grad) <= 4 * TOLERANCE[torch.float32]


def test_an_exported_model_holds_the_packed_op():
    class Mixer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)

        def forward(self, x, seq_idx):
            return tritonconv.causal_conv1d(x, self.conv.weight, self.conv.bias, "silu", seq_idx=seq_idx)

    mixer, x, seq_idx = Mixer(), torch.randn(2, 6, 10), packed_ids(2, 10, 8)
    exported = torch.export.export(mixer, (x, seq_idx))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert "tritonconv.causal_conv1d_packed.default" in targets
    torch.testing.assert_close(exported.module()(x, seq_idx), mixer(x, seq_idx), rtol=0, atol=0)
