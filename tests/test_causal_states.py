"""`tritonconv.causal_conv1d` with the causal-conv1d package's states and mixed precision, against a
float64 reference written from the semantics: initial states replace the zero padding, the final
states are the last W-1 columns of cat(initial states or zeros, x), x may be fp16/bf16 with an fp32
weight and bias (fp32 arithmetic, each gradient in its operand's dtype)."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import tritonconv

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-12}


def reference(x, weight, bias=None, silu=False, initial_states=None):
    """(out, final) in float64 from the definition; weight (D, W)."""
    width = weight.shape[-1]
    history = torch.zeros(*x.shape[:2], width - 1, dtype=torch.float64) if initial_states is None else \
        initial_states.double()  # fmt: skip
    extended = torch.cat([history, x.double()], dim=-1)
    out = sum(extended[..., k : k + x.shape[-1]] * weight.double()[:, k, None] for k in range(width))
    if bias is not None:
        out = out + bias.double()[:, None]
    return (F.silu(out) if silu else out), extended[..., x.shape[-1] :]


def _x(batch, channels, length, dtype, layout):
    if layout == "blc":  # the (B, L, D) storage Mamba keeps, seen as (B, D, L)
        return torch.randn(batch, length, channels).to(dtype).transpose(1, 2)
    return torch.randn(batch, channels, length).to(dtype)


def _close(got, want, dtype, what):
    got, want = got.detach().double(), want.detach()
    error = float((got - want).abs().max() / want.abs().max().clamp_min(1.0))
    assert error <= TOLERANCE[dtype], f"{what}: relative error {error:.3g}"


@pytest.mark.parametrize("width", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("layout", ["bcl", "blc"])
def test_initial_and_final_states_match_the_definition(width, layout):
    channels = 12
    for length, with_initial in ((1, True), (3, False), (9, True), (13, False)):
        x = _x(2, channels, length, torch.float32, layout)
        weight, bias = torch.randn(channels, width), torch.randn(channels)
        initial = torch.randn(2, channels, width - 1) if with_initial else None
        out, final = tritonconv.causal_conv1d(x, weight, bias, "silu", initial_states=initial, return_final_states=True)
        want_out, want_final = reference(x, weight, bias, True, initial)
        assert out.shape == x.shape and (length == 1 or out.stride() == x.stride()), "the output keeps x's layout"
        _close(out, want_out, torch.float32, f"width {width}, length {length}")
        assert final.shape == (2, channels, width - 1) and torch.equal(final.double(), want_final)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_mixed_precision_computes_in_fp32_and_gives_each_gradient_in_its_dtype(dtype):
    channels, width = 10, 4
    x = _x(2, channels, 7, dtype, "blc").requires_grad_()
    weight = torch.randn(channels, 1, width, requires_grad=True)  # fp32, as the serving engines keep it
    bias = torch.randn(channels, requires_grad=True)
    initial = torch.randn(2, channels, width - 1).to(dtype).requires_grad_()
    out, final = tritonconv.causal_conv1d(x, weight, bias, "silu", initial_states=initial, return_final_states=True)
    assert out.dtype == dtype and final.dtype == dtype
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    assert (x.grad.dtype, initial.grad.dtype, weight.grad.dtype, bias.grad.dtype) == (dtype, dtype) + (
        torch.float32,
    ) * 2
    leaves = [t.detach().double().requires_grad_() for t in (x, weight.squeeze(1), bias, initial)]
    want_out, _ = reference(leaves[0], leaves[1], leaves[2], True, leaves[3])
    (want_out * grad.double()).sum().backward()
    _close(out, want_out.detach(), dtype, "output")
    grads = (x.grad, weight.grad.squeeze(1), bias.grad, initial.grad)
    for got, want, name in zip(grads, leaves, ("x", "weight", "bias", "initial states"), strict=True):
        error = float((got.double() - want.grad).abs().max() / want.grad.abs().max().clamp_min(1.0))
        assert error <= 8 * TOLERANCE[dtype], f"d{name}: {error:.3g}"  # the output's gradient met x's dtype


def test_gradients_reach_the_initial_states_through_the_output_and_the_final_states():
    channels, width = 6, 4
    x = torch.randn(2, channels, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(channels, width, dtype=torch.float64, requires_grad=True)
    initial = torch.randn(2, channels, width - 1, dtype=torch.float64, requires_grad=True)
    out, final = tritonconv.causal_conv1d(x, weight, None, None, initial_states=initial, return_final_states=True)
    out.mul_(2)  # an in-place change of the output before backward must not break it
    (out.square().sum() + 3 * final.sum()).backward()
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, initial)]
    want, want_final = reference(leaves[0], leaves[1], None, False, leaves[2])
    ((2 * want).square().sum() + 3 * want_final.sum()).backward()
    for got, expected in zip((x.grad, weight.grad, initial.grad), leaves, strict=True):
        torch.testing.assert_close(got, expected.grad, rtol=1e-10, atol=1e-10)
    short = torch.randn(2, channels, 1, dtype=torch.float64)  # shorter than W-1: the final states take history
    states = initial.detach()
    _, final = tritonconv.causal_conv1d(short, weight.detach(), initial_states=states, return_final_states=True)
    assert torch.equal(final[..., :2], states[..., 1:]) and torch.equal(final[..., 2:], short)


def test_gradcheck_with_states():
    channels, width = 3, 3
    inputs = [torch.randn(1, channels, 4, dtype=torch.float64, requires_grad=True),
              torch.randn(channels, width, dtype=torch.float64, requires_grad=True),
              torch.randn(channels, dtype=torch.float64, requires_grad=True),
              torch.randn(1, channels, width - 1, dtype=torch.float64, requires_grad=True)]  # fmt: skip

    def both(x, weight, bias, initial):
        out, final = tritonconv.causal_conv1d(x, weight, bias, "silu", initial_states=initial, return_final_states=True)
        return out, final

    assert gradcheck(both, inputs, fast_mode=True)


def test_final_states_out_is_written_in_place_and_seq_idx_refused_with_initial_states():
    x, weight = torch.randn(2, 4, 6), torch.randn(4, 3)
    target = torch.full((2, 4, 2), float("nan"))
    out, final = tritonconv.causal_conv1d(x, weight, final_states_out=target)
    assert final is target and torch.equal(target, x[..., -2:])
    _close(out, reference(x, weight)[0], torch.float32, "output")
    with pytest.raises(ValueError, match="initial_states cannot be combined with seq_idx"):
        tritonconv.causal_conv1d(x, weight, seq_idx=torch.zeros(2, 6, dtype=torch.int32),
                                 initial_states=torch.zeros(2, 4, 2))  # fmt: skip
    with pytest.raises(RuntimeError, match=r"initial_states must be \[2, 4, 2\]"):
        tritonconv.causal_conv1d(x, weight, initial_states=torch.zeros(2, 4, 3))
