"""The TMA-fed stride-1 forward (`kernels/tma_fwd.py`) against the float64 reference, through the
interpreter: borders, dilation, ragged tiles, channel counts, batch, dtypes and the fused tail; the
fallback to the pointer kernel; a planted off-by-one that the checks catch; and the descriptors'
zero fill at negative coordinates, which is the padding."""

import contextlib
import dataclasses

import pytest
import torch
import triton
import triton.language as tl
from conv_reference import assert_conv2d_close, random_conv_inputs

import tritonconv
from tritonconv.ops import tma
from tritonconv.ops.descriptors import tensor_descriptor
from tritonconv.ops.epilogue import NO_EPILOGUE, Epilogue
from tritonconv.ops.launch import KernelLaunch
from tritonconv.plan import dispatch, prepared
from tritonconv.routes import registry
from tritonconv.routes.registry import Pass, Plan, Variant

pytestmark = pytest.mark.skipif(tensor_descriptor() is None, reason="this Triton has no host tensor descriptors")

# (n, c, h, w, k, r, s, padding, dilation): what each case pins down
CASES = {
    "3x3 pad 1, four borders": (2, 16, 7, 9, 24, 3, 3, 1, 1),
    "5x5 pad 2 on a 4x5 input": (1, 8, 4, 5, 16, 5, 5, 2, 1),
    "dilation 2, pad 2": (1, 24, 6, 7, 16, 3, 3, 2, 2),
    "no padding, ragged boxes": (1, 16, 9, 19, 16, 3, 3, 0, 1),
    "C = 40, K = 24: ragged channel blocks": (2, 40, 5, 5, 24, 3, 3, 1, 1),
    "1x3 kernel, rectangular padding": (1, 8, 5, 6, 8, 1, 3, (0, 1), 1),
}


def _run_tma(x, weight, bias, padding, dilation, config_changes=None, epilogue=NO_EPILOGUE, residual=None):
    """The TMA route at its heuristic config (with `config_changes`), and which kernels it launched."""
    problem = tritonconv.problem_from_tensors(x, weight, bias, 1, padding, dilation, 1)
    route = registry.spec(Pass.FWD, Variant.TMA)
    assert route.applies(problem)
    config = dataclasses.replace(route.heuristic(problem), **(config_changes or {}))
    call = prepared.PreparedConv(problem, x, weight, epilogue, plans={Pass.FWD: Plan(Variant.TMA, config, "test")})
    with kernels_launched() as launched:
        return call.forward(x, weight, bias, residual), launched


@contextlib.contextmanager
def kernels_launched():
    """The names of the kernels launched within the block, in order."""
    launched = []
    original = KernelLaunch.__call__

    def noting(self, *pointers):
        launched.append(self.kernel.__name__)
        return original(self, *pointers)

    KernelLaunch.__call__ = noting
    try:
        yield launched
    finally:
        KernelLaunch.__call__ = original


def _inputs(n, c, h, w, k, r, s, dtype=torch.float32, device="cpu", seed=0):
    x, weight, bias = random_conv_inputs(n, c, h, w, k, r, s, dtype=dtype, device=device, channels_last=True, seed=seed)
    return x, weight.to(memory_format=torch.channels_last), bias


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_tma_forward_matches_the_reference(case, device):
    n, c, h, w, k, r, s, padding, dilation = CASES[case]
    x, weight, bias = _inputs(n, c, h, w, k, r, s, device=device)
    y, launched = _run_tma(x, weight, bias, padding, dilation, {"block_n": 16, "block_k": 16})
    assert launched == ["_conv2d_fwd_tma_kernel"]
    assert_conv2d_close(y, x, weight, bias, padding=padding, dilation=dilation)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_the_tma_forward_in_16_bit(dtype, device):
    x, weight, bias = _inputs(2, 24, 6, 6, 32, 3, 3, dtype=dtype, device=device)
    y, launched = _run_tma(x, weight, bias, 1, 1)
    assert launched == ["_conv2d_fwd_tma_kernel"]
    assert_conv2d_close(y, x, weight, bias, padding=1)


def test_the_tma_forward_runs_the_fused_tail(device):
    x, weight, bias = _inputs(1, 16, 5, 6, 16, 3, 3, device=device)
    residual = torch.randn(1, 16, 5, 6, device=device).to(memory_format=torch.channels_last)
    y, launched = _run_tma(x, weight, bias, 1, 1, epilogue=Epilogue("relu", 0.0), residual=residual)
    assert launched == ["_conv2d_fwd_tma_kernel"]
    expected = torch.relu(torch.nn.functional.conv2d(x.double(), weight.double(), bias.double(), padding=1) + residual)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


def test_tensors_a_descriptor_cannot_address_take_the_pointer_kernel(device):
    """An NCHW weight or a strided input view: the same route, served by the implicit-GEMM kernel."""
    x, weight, bias = _inputs(1, 16, 6, 6, 16, 3, 3, device=device)
    nchw_weight = weight.contiguous()
    y, launched = _run_tma(x, nchw_weight, bias, 1, 1)
    assert launched == ["_conv2d_fwd_implicit_gemm_kernel"]
    assert_conv2d_close(y, x, nchw_weight, bias, padding=1)


@pytest.mark.parametrize("pass_name", [Pass.FWD, Pass.DGRAD, Pass.WGRAD])
def test_a_planted_off_by_one_is_caught(pass_name, device, monkeypatch):
    """Mutation check: every TMA route launched one row off (PAD_H + 1) must fail the comparison
    these tests make, and the same route unshifted must pass it."""
    x, weight, _ = _inputs(2, 16, 7, 9, 24, 3, 3, device=device)
    problem = tritonconv.problem_from_tensors(x, weight, None, 1, 1, 1, 1)
    grad_output = torch.randn(problem.output_shape, device=device).to(memory_format=torch.channels_last)
    expected = float64_results(x, weight, grad_output, padding=1)[pass_name]

    def result():
        route = registry.spec(pass_name, Variant.TMA)
        config = dataclasses.replace(route.heuristic(problem), block_m=16, block_n=16, block_k=16)
        call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE, plans={pass_name: Plan(Variant.TMA, config, "t")})
        if pass_name == Pass.FWD:
            return call.forward(x, weight, None).double()
        if pass_name == Pass.DGRAD:
            return call.input_grad(grad_output, weight).double()
        return call.weight_grad(x, grad_output).double()

    torch.testing.assert_close(result(), expected, rtol=1e-5, atol=1e-4)
    original = tma.KernelLaunch

    def shifted(kernel, grid, scalars, constexprs):
        geometry = constexprs["GEOMETRY"]
        return original(kernel, grid, scalars, {**constexprs, "GEOMETRY": geometry._replace(pad_h=geometry.pad_h + 1)})

    monkeypatch.setattr(tma, "KernelLaunch", shifted)
    with pytest.raises(AssertionError, match="not close"):
        torch.testing.assert_close(result(), expected, rtol=1e-5, atol=1e-4)


@triton.jit
def _load_box(desc, out_ptr, H0: tl.constexpr, W0: tl.constexpr):
    box = desc.load([0, H0, W0, 0]).reshape(32)
    tl.store(out_ptr + tl.arange(0, 32), box)


def test_descriptor_loads_zero_fill_outside_the_tensor_negative_coordinates_included(device):
    """What the padding rests on: a box at (-1, -1) reads zeros for the row and column outside."""
    x = torch.arange(1, 1 + 3 * 4 * 4, dtype=torch.float32, device=device).reshape(1, 3, 4, 4)
    descriptor = tensor_descriptor().from_tensor(x, [1, 2, 4, 4])
    out = torch.full((32,), float("nan"), device=device)
    _load_box[(1,)](descriptor, out, -1, -1)
    box = out.reshape(2, 4, 4)
    assert (box[0] == 0).all(), "row -1 is outside: zeros"
    assert (box[1, 0] == 0).all(), "column -1 is outside: zeros"
    assert torch.equal(box[1, 1:], x[0, 0, :3])


def test_the_tuner_times_the_tma_route_where_it_applies():
    problem = tritonconv.make_problem(n=1, c=16, h=8, w=8, k=16, r=3, s=3, padding=1, layout="channels_last")
    assert Variant.TMA in registry.tuned_variants(problem, Pass.FWD)
    assert dispatch.choose_variant(problem) != Variant.TMA, "the rule does not pick it before a GPU measured it"
    strided = dataclasses.replace(problem, stride=(2, 2))
    assert Variant.TMA not in registry.routes(strided, Pass.FWD)
    nchw = dataclasses.replace(problem, layout="contiguous")
    assert Variant.TMA not in registry.routes(nchw, Pass.FWD)


GRADIENT_CASES = {
    "3x3 pad 1, 2 images": (2, 16, 7, 9, 24, 3, 3, 1, 1),
    "5x5 pad 2, C = 8": (1, 8, 4, 5, 16, 5, 5, 2, 1),
    "dilation 2, C = 24, K = 40": (1, 24, 6, 7, 40, 3, 3, 2, 2),
    "no padding, ragged boxes": (1, 16, 9, 19, 16, 3, 3, 0, 1),
    "'same' with an even kernel": (1, 16, 6, 6, 16, 4, 4, "same", 1),
}


def float64_results(x, weight, grad_output, **geometry) -> dict:
    """torch's forward and both gradients in float64, keyed by pass."""
    x64, weight64 = x.double().requires_grad_(), weight.double().requires_grad_()
    y = torch.nn.functional.conv2d(x64, weight64, **geometry)
    y.backward(grad_output.double())
    return {Pass.FWD: y.detach(), Pass.DGRAD: x64.grad, Pass.WGRAD: weight64.grad}


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=list(GRADIENT_CASES))
def test_the_tma_input_gradient_matches_the_reference(case, device):
    """dX of a stride-1 conv by the forward kernel with the roles swapped and the taps reversed."""
    n, c, h, w, k, r, s, padding, dilation = GRADIENT_CASES[case]
    x, weight, _ = _inputs(n, c, h, w, k, r, s, device=device)
    problem = tritonconv.problem_from_tensors(x, weight, None, 1, padding, dilation, 1)
    route = registry.spec(Pass.DGRAD, Variant.TMA)
    assert route.applies(problem)
    config = dataclasses.replace(route.heuristic(problem), block_n=16, block_k=16)
    grad_output = torch.randn(problem.output_shape, device=device).to(memory_format=torch.channels_last)
    call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE, plans={Pass.DGRAD: Plan(Variant.TMA, config, "t")})
    with kernels_launched() as launched:
        grad_input = call.input_grad(grad_output, weight)
    assert launched == ["_conv2d_fwd_tma_kernel"]
    assert grad_input.stride() == x.stride()
    expected = float64_results(x, weight, grad_output, padding=padding, dilation=dilation)[Pass.DGRAD]
    torch.testing.assert_close(grad_input.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("split_k", [1, 3], ids=["direct", "split"])
@pytest.mark.parametrize("case", GRADIENT_CASES, ids=list(GRADIENT_CASES))
def test_the_tma_weight_gradient_matches_the_reference(case, split_k, device):
    """dW by (K x C) tiles at one tap, reduced over output-pixel boxes: directly, or split and summed."""
    n, c, h, w, k, r, s, padding, dilation = GRADIENT_CASES[case]
    x, weight, _ = _inputs(n, c, h, w, k, r, s, device=device)
    problem = tritonconv.problem_from_tensors(x, weight, None, 1, padding, dilation, 1)
    route = registry.spec(Pass.WGRAD, Variant.TMA)
    assert route.applies(problem)
    config = route.clamp(dataclasses.replace(route.heuristic(problem), block_m=16, block_n=16, block_k=16,
                                             split_k=split_k), problem)  # fmt: skip
    grad_output = torch.randn(problem.output_shape, device=device).to(memory_format=torch.channels_last)
    call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE, plans={Pass.WGRAD: Plan(Variant.TMA, config, "t")})
    with kernels_launched() as launched:
        grad_weight = call.weight_grad(x, grad_output)
    expected_kernels = ["_conv2d_wgrad_tma_kernel"] + (["_sum_splits_kernel"] if config.split_k > 1 else [])
    assert launched == expected_kernels
    assert grad_weight.stride() == weight.stride()
    expected = float64_results(x, weight, grad_output, padding=padding, dilation=dilation)[Pass.WGRAD]
    torch.testing.assert_close(grad_weight.double(), expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(call.weight_grad(x, grad_output), grad_weight), "not bitwise reproducible"


@pytest.mark.parametrize("split_k", [1, 3], ids=["direct", "split"])
@pytest.mark.parametrize("case", ["3x3 pad 1, 2 images", "dilation 2, C = 24, K = 40"])
def test_the_tma_weight_gradient_computes_the_bias_gradient_in_the_same_launch(case, split_k, device):
    """dW and db from one partial launch (and, split, one ordered sum): no bias-grad kernel runs,
    both match the reference, and a second run is bit-for-bit the first."""
    n, c, h, w, k, r, s, padding, dilation = GRADIENT_CASES[case]
    x, weight, _ = _inputs(n, c, h, w, k, r, s, device=device)
    problem = tritonconv.problem_from_tensors(x, weight, None, 1, padding, dilation, 1)
    route = registry.spec(Pass.WGRAD, Variant.TMA)
    assert route.fuses_bias_grad
    config = route.clamp(dataclasses.replace(route.heuristic(problem), block_m=16, block_n=16, block_k=16,
                                             split_k=split_k), problem)  # fmt: skip
    grad_output = torch.randn(problem.output_shape, device=device).to(memory_format=torch.channels_last)
    call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE, plans={Pass.WGRAD: Plan(Variant.TMA, config, "t")})
    with kernels_launched() as launched:
        grad_weight, grad_bias = call.weight_and_bias_grad(x, grad_output)
    assert launched == ["_conv2d_wgrad_tma_kernel"] + (["_sum_splits_kernel"] if config.split_k > 1 else [])
    expected = float64_results(x, weight, grad_output, padding=padding, dilation=dilation)[Pass.WGRAD]
    torch.testing.assert_close(grad_weight.double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad_bias.double(), grad_output.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-4)
    again = call.weight_and_bias_grad(x, grad_output)
    assert torch.equal(again[0], grad_weight) and torch.equal(again[1], grad_bias), "not bitwise reproducible"


def test_a_conv_with_bias_on_the_tma_weight_gradient_runs_no_bias_reduction(device):
    """Through autograd: dW and db come from the fused launch, dX from its own, and all three match."""
    x, weight, bias = _inputs(2, 16, 6, 7, 24, 3, 3, device=device)
    problem = tritonconv.problem_from_tensors(x, weight, bias, 1, 1, 1, 1)
    config = registry.spec(Pass.WGRAD, Variant.TMA).heuristic(problem)
    plans = {Pass.WGRAD: Plan(Variant.TMA, config, "test")}
    x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()
    y = tritonconv.frontend.functional.Conv2dFunction.apply(
        x, weight, bias, prepared.PreparedConv(problem, x, weight, NO_EPILOGUE, plans=plans)
    )
    grad_output = torch.randn_like(y)
    with kernels_launched() as launched:
        y.backward(grad_output)
    assert "_conv2d_bias_grad_kernel" not in launched and "_conv2d_wgrad_tma_kernel" in launched
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    torch.nn.functional.conv2d(x64, w64, b64, padding=1).backward(grad_output.double())
    for got, want in ((x.grad, x64.grad), (weight.grad, w64.grad), (bias.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
