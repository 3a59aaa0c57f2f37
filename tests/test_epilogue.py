"""Fused epilogues: activation(conv2d(x, w, b) + residual) in every variant's kernel, and its backward,
against the unfused torch computation in float64."""

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops

import tritonconv
from tritonconv.ops.epilogue import ACTIVATIONS, Epilogue, torch_activation
from tritonconv.plan.prepared import PreparedConv

# (variant the rule picks, c, k, r, groups, stride)
VARIANT_SHAPES = {
    "implicit_gemm": (6, 16, 3, 1, 2),
    "conv1x1": (8, 16, 1, 1, 1),
    "grouped_tile": (16, 16, 3, 4, 1),
    "depthwise": (16, 32, 3, 16, 1),
}


def make_case(variant, dtype, device, channels_last=False, seed=0):
    c, k, r, groups, stride = VARIANT_SHAPES[variant]
    generator = torch.Generator().manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def leaf(*shape):
        tensor = torch.randn(shape, generator=generator).to(device, dtype)
        if len(shape) == 4:
            tensor = tensor.to(memory_format=memory_format)
        return tensor.requires_grad_()

    x, weight, bias = leaf(2, c, 7, 7), leaf(k, c // groups, r, r), leaf(k)
    geometry = dict(stride=stride, padding=r // 2, groups=groups)
    p = (7 + 2 * (r // 2) - r) // stride + 1
    residual = leaf(2, k, p, p)
    return x, weight, bias, residual, geometry


def unfused(x, weight, bias, residual, geometry, activation, slope=0.01):
    out = F.conv2d(x, weight, bias, **geometry)
    if residual is not None:
        out = out + residual
    return out if activation is None else torch_activation(out, activation, slope)


@needs_runtime_loops
@pytest.mark.parametrize("with_residual", [False, True], ids=["no residual", "residual"])
@pytest.mark.parametrize("activation", [None, *ACTIVATIONS])
@pytest.mark.parametrize("variant", list(VARIANT_SHAPES))
def test_values_and_every_gradient_match_the_unfused_computation(variant, activation, with_residual, device):
    x, weight, bias, residual, geometry = make_case(variant, torch.float32, device)
    residual = residual if with_residual else None
    assert tritonconv.explain(x, weight, bias, **geometry)["variant"] == variant
    got = tritonconv.conv2d(x, weight, bias, **geometry, activation=activation, residual=residual)
    leaves = [t for t in (x, weight, bias, residual) if t is not None]
    wide = [t.detach().double().requires_grad_() for t in leaves]
    expected = unfused(*wide[:3], wide[3] if with_residual else None, geometry, activation)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5 * scale)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = torch.autograd.grad(got, leaves, grad.to(device, torch.float32))
    theirs = torch.autograd.grad(expected, wide, grad)
    for name, mine, reference in zip(("input", "weight", "bias", "residual"), ours, theirs, strict=False):
        tolerance = 1e-5 * reference.abs().max().item() + 1e-6
        torch.testing.assert_close(mine.double().cpu(), reference, rtol=0, atol=tolerance, msg=name)


@needs_runtime_loops
@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_channels_last_half_precision_and_a_strided_residual(activation, device):
    x, weight, bias, residual, geometry = make_case("implicit_gemm", torch.float16, device, channels_last=True)
    strided = torch.randn(residual.shape[0], residual.shape[2], residual.shape[3], residual.shape[1] * 2)
    strided = strided.to(device, torch.float16)[..., ::2].permute(0, 3, 1, 2)  # every other channel, NHWC view
    got = tritonconv.conv2d(x, weight, bias, **geometry, activation=activation, residual=strided)
    assert got.is_contiguous(memory_format=torch.channels_last)
    expected = unfused(x.double(), weight.double(), bias.double(), strided.double(), geometry, activation)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-2 * expected.abs().max().item())


def test_relu_keeps_no_extra_tensor_and_inference_keeps_none(device):
    x, weight, bias, residual, geometry = make_case("conv1x1", torch.float32, device)
    problem = tritonconv.problem_from_tensors(x, weight, bias, **geometry)
    detached = [t.detach() for t in (x, weight, bias, residual)]

    def fused_forward(x, weight, bias, residual, problem, activation, slope, for_backward):
        prepared = PreparedConv(problem, x, weight, Epilogue(activation, slope))
        return prepared.forward_with_epilogue(x, weight, bias, residual, for_backward)

    output, saved = fused_forward(*detached, problem, "relu", 0.01, for_backward=True)
    assert saved is output, "relu's derivative reads the output: no pre-activation kept"
    output, saved = fused_forward(*detached, problem, "silu", 0.01, for_backward=True)
    torch.testing.assert_close(saved, unfused(*detached, geometry, None))  # silu keeps z = conv + bias + residual
    assert fused_forward(*detached, problem, "silu", 0.01, for_backward=False)[1] is None
    leaky = fused_forward(*detached, problem, "leaky_relu", -0.5, for_backward=True)
    assert leaky[1] is not leaky[0], "a negative slope flips the sign: the pre-activation is needed"
    with torch.no_grad():
        y = tritonconv.conv2d(x, weight, bias, **geometry, activation="gelu", residual=residual)
    torch.testing.assert_close(y, unfused(*detached, geometry, "gelu"), rtol=1e-4, atol=1e-4)


def test_the_epilogue_refuses_what_it_cannot_fuse(device):
    x, weight, bias, residual, geometry = make_case("conv1x1", torch.float32, device)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        tritonconv.conv2d(x, weight, bias, **geometry, activation="tanh")
    with pytest.raises(RuntimeError, match="residual must match the convolution's output"):
        tritonconv.conv2d(x, weight, bias, **geometry, residual=residual[:, :3])
    with pytest.raises(RuntimeError, match=r"dtype torch\.float32"):
        tritonconv.conv2d(x, weight, bias, **geometry, residual=residual.double())


@needs_runtime_loops
def test_unbatched_input_and_torch_compile(device):
    x, weight, bias, residual, geometry = make_case("implicit_gemm", torch.float32, device)
    single = tritonconv.conv2d(x[0], weight, bias, **geometry, activation="gelu_tanh", residual=residual[0])
    torch.testing.assert_close(
        single, unfused(x[0], weight, bias, residual[0], geometry, "gelu_tanh"), rtol=1e-4, atol=1e-4
    )

    def block(x, weight, bias, residual):
        return tritonconv.conv2d(x, weight, bias, **geometry, activation="silu", residual=residual)

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    got = compiled(x, weight, bias, residual)
    torch.testing.assert_close(got, block(x, weight, bias, residual), rtol=1e-4, atol=1e-4)
