"""Long-sequence depthwise conv1d (`ops/depthwise_1d.py`) and `tritonconv.causal_conv1d`: forward
and both gradients against float64 torch in both layouts, every tap count the route takes, dilation,
lengths that are no multiple of any block, fp16/bf16/fp32, the fused SiLU, gradcheck, and a small
Mamba-style block patched."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops
from torch import nn
from torch.autograd import gradcheck

import tritonconv
from tritonconv.frontend.sequence import causal_problem, reference_causal_conv1d
from tritonconv.ops.epilogue import NO_EPILOGUE
from tritonconv.plan.dispatch import plan_and_finality
from tritonconv.plan.prepared import PreparedConv, call_key
from tritonconv.plan.prepared import _prepared as PREPARED
from tritonconv.problem.arithmetic import conv1d_problem, make_problem
from tritonconv.problem.torch_reference import EPSILONS, SAFETY, error_bound
from tritonconv.routes import registry
from tritonconv.routes.registry import Pass, Plan, Variant

CHANNELS, LENGTH = 20, 37  # neither a multiple of any block


def _sequence(batch, channels, length, layout, dtype, generator):
    """(B, C, L): contiguous, or the (B, L, C) layout Mamba keeps, as a transposed view."""
    if layout == "blc":
        return torch.randn(batch, length, channels, generator=generator, dtype=dtype).transpose(1, 2)
    return torch.randn(batch, channels, length, generator=generator, dtype=dtype)


def _operands(taps, layout, dtype=torch.float64, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = _sequence(batch, CHANNELS, LENGTH, layout, torch.float64, generator).to(dtype)
    weight = torch.randn(CHANNELS, 1, taps, generator=generator, dtype=torch.float64).to(dtype)
    bias = torch.randn(CHANNELS, generator=generator, dtype=torch.float64).to(dtype)
    return x, weight, bias


def _variants(problem) -> dict:
    """The variant the rule plans for each pass of `problem`."""
    return {pass_name: plan_and_finality(problem, pass_name)[0].variant for pass_name in Pass}


ALL_SEQUENCE = {pass_name: Variant.DEPTHWISE_1D for pass_name in Pass}


def _close(got, expected, magnitude, dtype, length, what, rounded_operand=False):
    """Within the error bound of a `length`-term reduction in `dtype` (float64: to rounding); with
    `rounded_operand`, one of its operands was itself rounded to `dtype` by the kernels (the fused
    activation's dZ), one more output ulp of every term."""
    if dtype == torch.float64:
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=what)
        return
    bound = error_bound(expected, magnitude, dtype, length)
    if rounded_operand:
        bound = bound + SAFETY * EPSILONS[dtype][0] * magnitude
    excess = ((got.double() - expected).abs() - bound).max().item()
    assert excess <= 0, f"{what}: {excess} beyond the {dtype} bound"


def _check_against_float64(run, reference, linear, x, weight, bias, taps, what, activated=False):
    """run(x, w, b) and its three gradients against reference(...) in float64 on the same
    (rounded) values, each within its dtype's bound for its reduction (taps, taps, N*L terms); the
    magnitudes are the linear part's (`linear`: no activation) on absolute values, times SiLU's
    largest slope. A fused activation's backward rounds dZ to the output's dtype (`activated`)."""
    ours = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    wide = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    absolute = [t.detach().double().abs().requires_grad_() for t in (x, weight, bias)]
    got = run(*ours)
    expected = reference(*wide)
    upper = linear(*absolute)
    _close(got, expected.detach(), 1.1 * upper.detach(), x.dtype, taps, f"{what} forward")
    grad = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    grad = grad.to(got.dtype).double()
    mine = torch.autograd.grad(got, ours, grad.to(got.dtype))
    theirs = torch.autograd.grad(expected, wide, grad)
    magnitudes = torch.autograd.grad(upper, absolute, 1.1 * grad.abs())
    lengths = {"input": taps, "weight": x.shape[0] * x.shape[-1], "bias": x.shape[0] * x.shape[-1]}
    for (name, length), ours_grad, torch_grad, magnitude in zip(lengths.items(), mine, theirs, magnitudes,
                                                                strict=True):  # fmt: skip
        _close(ours_grad, torch_grad, magnitude, x.dtype, length, f"{what} {name} gradient", activated)
    return got


@needs_runtime_loops
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["bcl", "blc"])
@pytest.mark.parametrize(("taps", "dilation"), [(2, 1), (3, 1), (4, 1), (8, 1), (4, 2)])
def test_a_conv1d_depthwise_layer_runs_the_sequence_route_in_every_pass(taps, dilation, layout, dtype):
    """The models' own pattern: nn.Conv1d(C, C, S, groups=C, padding=(S-1)*dil), its output cropped."""
    x, weight, bias = _operands(taps, layout, dtype)
    padding = (taps - 1) * dilation

    def ours(x, weight, bias):
        return tritonconv.conv1d(x, weight, bias, padding=padding, dilation=dilation, groups=CHANNELS)

    def torchs(x, weight, bias):
        return F.conv1d(x, weight, bias, padding=padding, dilation=dilation, groups=CHANNELS)

    got = _check_against_float64(ours, torchs, torchs, x, weight, bias, taps, f"conv1d {layout}")
    assert got.is_contiguous()  # torch's conv1d output, whatever the input's strides
    geometry = ((1, 1), (0, padding), (1, dilation), CHANNELS)
    assert _variants(conv1d_problem(x.unsqueeze(-2), weight.unsqueeze(-2), bias, *geometry)) == ALL_SEQUENCE


@needs_runtime_loops
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["bcl", "blc"])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize(("taps", "dilation"), [(2, 1), (4, 1), (8, 1), (3, 2)])
def test_causal_conv1d_matches_the_cropped_padded_conv1d(taps, dilation, activation, layout, dtype):
    x, weight, bias = _operands(taps, layout, dtype)

    def ours(x, weight, bias):
        return tritonconv.causal_conv1d(x, weight, bias, activation, dilation=dilation)

    def torchs(x, weight, bias):
        return reference_causal_conv1d(x, weight, bias, activation, dilation=dilation)

    def linear(x, weight, bias):
        return reference_causal_conv1d(x, weight, bias, None, dilation=dilation)

    got = _check_against_float64(ours, torchs, linear, x, weight, bias, taps, f"causal {layout} {activation}",
                                 activated=activation is not None)  # fmt: skip
    assert got.shape == x.shape and got.stride() == x.stride()  # x's layout: (B, L, C) in, (B, L, C) out
    geometry = ((1, 1), (0, (taps - 1) * dilation), (1, dilation), CHANNELS)
    problem = causal_problem(x.unsqueeze(-2), weight.unsqueeze(-2), bias, *geometry)
    assert problem.padding_end == (0, 0) and problem.q == LENGTH  # no padded tail computed
    assert _variants(problem) == ALL_SEQUENCE


@needs_runtime_loops
def test_causal_conv1d_unbatched_and_without_bias():
    x, weight, _ = _operands(4, "bcl")
    got = tritonconv.causal_conv1d(x[0], weight, None, "silu")
    torch.testing.assert_close(got, reference_causal_conv1d(x[0], weight, None, "silu"), rtol=1e-10, atol=1e-10)


@needs_runtime_loops
@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d_passes_gradcheck(activation):
    x, weight, bias = _operands(4, "blc", batch=1)
    inputs = tuple(t.detach().clone().requires_grad_() for t in (x[..., :9], weight, bias))
    assert gradcheck(lambda *a: tritonconv.causal_conv1d(*a, activation, dilation=2), inputs, fast_mode=True)


def test_causal_conv1d_refuses_what_it_cannot_mean():
    x, weight, bias = _operands(4, "bcl")
    with pytest.raises(ValueError, match="activation must be None, 'silu' or 'swish'"):
        tritonconv.causal_conv1d(x, weight, bias, "relu")
    with pytest.raises(RuntimeError, match="depthwise weight"):
        tritonconv.causal_conv1d(x, weight[:10], bias)
    with pytest.raises(RuntimeError, match="depthwise weight"):
        tritonconv.causal_conv1d(x, weight.expand(-1, 2, -1), bias)
    with pytest.raises(RuntimeError):  # F.conv1d's own error for the bias
        tritonconv.causal_conv1d(x, weight, bias[:3])


@needs_runtime_loops
@pytest.mark.parametrize("split_k", [1, 4])
@pytest.mark.parametrize("layout", ["bcl", "blc"])
def test_the_weight_gradient_sums_every_tap_and_the_bias_in_one_pass(layout, split_k):
    """The route pinned with one chunk (dW and db stored directly) and four (a workspace summed in
    order); both against float64 torch, and the same bits on a second run."""
    x, weight, _ = _operands(4, layout)
    grad_output = torch.randn(2, CHANNELS, LENGTH + 3, dtype=torch.float64)
    memory = "channels_last" if layout == "blc" else "contiguous"
    problem = make_problem(n=2, c=CHANNELS, h=1, w=LENGTH, k=CHANNELS, r=1, s=4, padding=(0, 3), groups=CHANNELS,
                           dtype=torch.float64, layout=memory)  # fmt: skip
    config = registry.spec(Pass.WGRAD, Variant.DEPTHWISE_1D).heuristic(problem)
    config = dataclasses.replace(config, split_k=split_k, block_m=16)
    prepared = PreparedConv(problem, x.unsqueeze(-2), weight.unsqueeze(-2), NO_EPILOGUE,
                            plans={Pass.WGRAD: Plan(Variant.DEPTHWISE_1D, config, "test")})  # fmt: skip
    grads = prepared.weight_and_bias_grad(x.unsqueeze(-2), grad_output.unsqueeze(-2))
    again = prepared.weight_and_bias_grad(x.unsqueeze(-2), grad_output.unsqueeze(-2))
    expected_weight = torch.nn.grad.conv1d_weight(x, weight.shape, grad_output, padding=3, groups=CHANNELS)
    torch.testing.assert_close(grads[0].squeeze(-2), expected_weight, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[1], grad_output.sum((0, 2)), rtol=1e-10, atol=1e-10)
    assert all(torch.equal(a, b) for a, b in zip(grads, again, strict=True))


class MambaMixer(nn.Module):
    """The convolution of a Mamba block, as the reference implementation writes it: in_proj to 2D,
    a depthwise causal conv1d over the (B, D, L) view of x, crop, SiLU, gated by z, out_proj."""

    def __init__(self, d_model: int = 8, expand: int = 2, d_conv: int = 4):
        super().__init__()
        d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.out_proj = nn.Linear(d_inner, d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, d_model)
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length])  # (B, D, L): a strided view in
        return self.out_proj(x.transpose(1, 2) * F.silu(z))


@needs_runtime_loops
def test_a_patched_mamba_block_matches_torch_and_runs_the_sequence_route():
    torch.manual_seed(0)
    reference = MambaMixer().double()
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model)
    assert report.patched == ["conv1d"], report
    hidden = torch.randn(2, 29, 8, dtype=torch.float64, requires_grad=True)
    hidden_ref = hidden.detach().clone().requires_grad_()
    tritonconv.reset_stats()
    got, expected = model(hidden), reference(hidden_ref)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    got.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(hidden.grad, hidden_ref.grad, rtol=1e-10, atol=1e-10)
    for (name, ours), (_, theirs) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=1e-10, msg=name)
    assert tritonconv.stats() == {"conv1d": {"tritonconv": 1, "torch": 0, "fallbacks": {}}}
    served = {"tritonconv": 1, "torch": 0, "fallbacks": {}, "routes": {"depthwise_1d": 1}}
    assert tritonconv.stats(routes=True) == {"conv1d": served}
    x = model.in_proj(hidden).chunk(2, dim=-1)[0].transpose(1, 2)
    conv = model.conv1d
    key = call_key(x.unsqueeze(-2), conv.weight.unsqueeze(-2), conv.bias, ((1, 1), (0, 3), (1, 1), conv.groups),
                   ("conv1d",))  # fmt: skip
    assert PREPARED[key].forward_plan.variant == Variant.DEPTHWISE_1D
