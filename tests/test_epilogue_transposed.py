"""Fused epilogues of transposed convolutions (bias, residual, activation in the tail of the
input-gradient kernel that computes them) and `patch(fuse=True)` folding ConvTranspose-BatchNorm-
activation decoder blocks, against unfused torch in float64."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops, random_batchnorm_statistics
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import tritonconv
from tritonconv.frontend.transposed import transposed_problem
from tritonconv.ops.epilogue import ACTIVATIONS, Epilogue, torch_activation
from tritonconv.plan.prepared import PreparedConv
from tritonconv.routes import registry
from tritonconv.routes.registry import Pass, Plan, Variant

TORCH_TRANSPOSED = {2: F.conv_transpose2d, 3: F.conv_transpose3d}

# route -> (x shape, weight shape, keywords, channels_last, dtype): a transposed convolution whose
# forward (the underlying convolution's input gradient) that route computes.
ROUTES = {
    Variant.IMPLICIT_GEMM: ((2, 6, 4, 5), (6, 4, 3, 3), dict(stride=2, padding=1, output_padding=1), False),
    Variant.STRIDE_PHASED: ((2, 6, 4, 5), (6, 4, 3, 3), dict(stride=2, padding=1, output_padding=1), True),
    Variant.CONV1X1: ((2, 6, 4, 5), (6, 5, 1, 1), dict(), True),
    Variant.DEPTHWISE: ((2, 6, 4, 5), (6, 1, 3, 3), dict(padding=1, groups=6), False),
    Variant.TMA: ((2, 8, 4, 5), (8, 8, 3, 3), dict(padding=1), True),
    Variant.IMPLICIT_GEMM_3D: ((2, 4, 3, 4, 3), (4, 3, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), False),
    Variant.DEPTHWISE_3D: ((2, 4, 3, 4, 3), (4, 1, 3, 3, 3), dict(padding=1, groups=4), True),
}
EPILOGUES = [(activation, with_residual) for activation in (None, *ACTIVATIONS) for with_residual in (False, True)
             if activation or with_residual]  # fmt: skip


def _operands(shape, weight_shape, keywords, channels_last, dtype=torch.float64, seed=0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    axes = len(shape) - 2
    layout = (
        (torch.channels_last if axes == 2 else torch.channels_last_3d) if channels_last else torch.contiguous_format
    )
    x = torch.randn(shape, generator=generator, dtype=dtype).to(memory_format=layout)
    weight = torch.randn(weight_shape, generator=generator, dtype=dtype)
    if channels_last:
        weight = weight.to(memory_format=layout)
    bias = torch.randn(weight_shape[1] * keywords.get("groups", 1), generator=generator, dtype=dtype)
    output = TORCH_TRANSPOSED[axes](x, weight, bias, **keywords)
    residual = torch.randn(output.shape, generator=generator, dtype=dtype)
    return x, weight, bias, residual


def _unfused(x, weight, bias, residual, keywords, activation, slope):
    y = TORCH_TRANSPOSED[x.dim() - 2](x, weight, bias, **keywords)
    y = y if residual is None else y + residual
    return y if activation is None else torch_activation(y, activation, slope)


def _geometry(keywords: dict) -> tuple:
    names_defaults = (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1))
    return tuple(keywords.get(name, default) for name, default in names_defaults)


@needs_runtime_loops
@pytest.mark.parametrize(("activation", "with_residual"), EPILOGUES, ids=lambda value: str(value))
@pytest.mark.parametrize("variant", list(ROUTES), ids=lambda variant: variant.value)
def test_every_input_gradient_route_runs_a_transposed_convolution_s_fused_tail(variant, activation, with_residual):
    """Each route pinned (the TMA one is never the rule's choice): values, and the pre-activation it
    keeps for the backward, against float64 torch. TMA reads fp32 (descriptors take 2- or 4-byte
    elements), so its tolerance is fp32's over a 72-term reduction."""
    shape, weight_shape, keywords, channels_last = ROUTES[variant]
    dtype = torch.float32 if variant == Variant.TMA else torch.float64
    x, weight, bias, residual = _operands(shape, weight_shape, keywords, channels_last, dtype)
    residual = residual if with_residual else None
    problem = transposed_problem(x, weight, bias, _geometry(keywords))
    assert variant in registry.routes(problem, Pass.DGRAD)
    config = registry.spec(Pass.DGRAD, variant).heuristic(problem)
    prepared = PreparedConv.for_gradients(problem, x, channels_last, channels_last,
                                          plans={Pass.DGRAD: Plan(variant, config, "test")})  # fmt: skip
    epilogue = Epilogue(activation or "", 0.2 if activation == "leaky_relu" else 0.0)
    got, saved = prepared.input_grad_with_epilogue(x, weight, bias, residual, epilogue, for_backward=True)
    wide = [t if t is None else t.double() for t in (x, weight, bias, residual)]
    expected = _unfused(*wide, keywords, activation, 0.2)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=tolerance)
    if activation and activation not in ("relu", "leaky_relu"):  # the kept pre-activation Z
        preactivation = _unfused(*wide, keywords, None, 0.2)
        torch.testing.assert_close(saved.double(), preactivation, rtol=tolerance, atol=tolerance)


CASES = {
    "2-D strided": ((2, 6, 4, 5), (6, 4, 3, 3), dict(stride=2, padding=1, output_padding=1), False),
    "2-D grouped channels_last": ((2, 6, 4, 5), (6, 2, 3, 3), dict(padding=1, groups=3, dilation=2), True),
    "3-D": ((2, 4, 3, 4, 3), (4, 3, 3, 3, 3), dict(stride=(1, 2, 2), padding=1), False),
    "3-D depthwise channels_last_3d": ((2, 4, 2, 3, 2), (4, 1, 3, 3, 3), dict(padding=1, groups=4), True),
}


# Every epilogue on the 2-D cases; on the slower 3-D ones (the interpreter runs their many programs
# one by one) a residual alone, SiLU (the pre-activation kept) with a residual, and leaky_relu.
FEW_EPILOGUES = [(None, True), ("silu", True), ("leaky_relu", False)]
CASE_EPILOGUES = [(case, *epilogue) for case in CASES for epilogue in (FEW_EPILOGUES if "3-D" in case else EPILOGUES)]


@needs_runtime_loops
@pytest.mark.parametrize(("case", "activation", "with_residual"), CASE_EPILOGUES, ids=lambda value: str(value))
def test_fused_transposed_values_and_gradients_match_unfused_torch_in_float64(case, activation, with_residual):
    shape, weight_shape, keywords, channels_last = CASES[case]
    x, weight, bias, residual = _operands(shape, weight_shape, keywords, channels_last)
    residual = residual if with_residual else None
    ours = [t if t is None else t.detach().clone().requires_grad_() for t in (x, weight, bias, residual)]
    theirs = [t if t is None else t.detach().clone().requires_grad_() for t in (x, weight, bias, residual)]
    function = tritonconv.conv_transpose2d if x.dim() == 4 else tritonconv.conv_transpose3d
    got = function(*ours[:3], **keywords, activation=activation, residual=ours[3], negative_slope=0.2)
    expected = _unfused(*theirs, keywords, activation, 0.2)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert got.stride() == function(x, weight, bias, **keywords).stride()  # the unfused call's layout
    grad = torch.randn_like(expected)
    wanted = [t for t in ours if t is not None]
    reference = [t for t in theirs if t is not None]
    tolerance = 1e-6 if activation == "leaky_relu" else 1e-10  # the slope is a float32 constexpr
    for mine, torch_s in zip(torch.autograd.grad(got, wanted, grad), torch.autograd.grad(expected, reference, grad),
                             strict=True):  # fmt: skip
        torch.testing.assert_close(mine, torch_s, rtol=tolerance, atol=tolerance)


@needs_runtime_loops
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_fused_conv_transpose1d_matches_unfused_torch(unbatched):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(3, generator=generator, dtype=torch.float64)
    if unbatched:
        x = x[0]
    residual = torch.randn(F.conv_transpose1d(x, weight, stride=2).shape, generator=generator, dtype=torch.float64)
    got = tritonconv.conv_transpose1d(x, weight, bias, stride=2, activation="gelu_tanh", residual=residual)
    expected = F.gelu(F.conv_transpose1d(x, weight, bias, stride=2) + residual, approximate="tanh")
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert got.is_contiguous()


@needs_runtime_loops
@pytest.mark.parametrize("case", ["2-D strided", "3-D"])
def test_fused_transposed_passes_gradcheck_and_gradgradcheck(case):
    shape, weight_shape, keywords, channels_last = CASES[case]
    x, weight, bias, residual = _operands(shape, weight_shape, keywords, channels_last)
    inputs = tuple(t[:1].detach().clone().requires_grad_() if i in (0, 3) else t.detach().clone().requires_grad_()
                   for i, t in enumerate((x, weight, bias, residual)))  # fmt: skip
    function = tritonconv.conv_transpose2d if x.dim() == 4 else tritonconv.conv_transpose3d

    def fused(x, weight, bias, residual, activation="silu"):
        return function(x, weight, bias, **keywords, activation=activation, residual=residual, negative_slope=0.1)

    assert gradcheck(fused, inputs, fast_mode=True)
    if x.dim() == 4:  # the 3-D routes' second derivatives are the same formulas (test_double_backward's 3-D cases)
        # Double backward: relu's and leaky_relu's derivatives are piecewise constant (the smooth ones refuse).
        assert gradgradcheck(lambda *a: fused(*a, activation="leaky_relu"), inputs, fast_mode=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(fused(*inputs).sum(), inputs[0], create_graph=True)


def test_fused_transposed_refuses_as_the_2d_epilogue_does():
    x, weight, bias, residual = _operands(*CASES["2-D strided"])
    keywords = CASES["2-D strided"][2]
    with pytest.raises(ValueError, match="activation must be None or one of"):
        tritonconv.conv_transpose2d(x, weight, bias, **keywords, activation="tanh")
    with pytest.raises(RuntimeError, match="residual must match the convolution's output"):
        tritonconv.conv_transpose2d(x, weight, bias, **keywords, residual=residual[:, :2])
    with pytest.raises(RuntimeError, match="residual must match the convolution's output"):
        tritonconv.conv_transpose2d(x, weight, bias, **keywords, residual=residual.float())


def _decoder_block(axes: int) -> nn.Sequential:
    """A decoder's upsampling blocks: ConvTranspose-BN-ReLU, a grouped one with GELU, one with a
    bias and SiLU (U-Net, DCGAN, SegNet, the 3-D ones of volumetric segmentation)."""
    torch.manual_seed(0)
    transpose, norm = (nn.ConvTranspose2d, nn.BatchNorm2d) if axes == 2 else (nn.ConvTranspose3d, nn.BatchNorm3d)
    block = nn.Sequential(
        transpose(6, 8, 2, stride=2, bias=False),
        norm(8),
        nn.ReLU(),
        transpose(8, 6, 3, padding=1, groups=2, bias=False),
        norm(6),
        nn.GELU(),
        transpose(6, 4, 3, stride=2, padding=1, output_padding=1),
        norm(4),
        nn.SiLU(),
    ).double()
    return random_batchnorm_statistics(block).eval()


@needs_runtime_loops
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("axes", [2, 3])
def test_patch_fuse_folds_batchnorm_into_transposed_convolutions(axes, channels_last):
    reference = _decoder_block(axes)
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model, fuse=True)
    assert len(report.fused) == 3 and all("BatchNorm folded" in chain for chain in report.fused), report
    assert all("in the epilogue" in chain for chain in report.fused), report
    layout = (
        (torch.channels_last if axes == 2 else torch.channels_last_3d) if channels_last else torch.contiguous_format
    )
    x = torch.randn(2, 6, *(3 if axes == 2 else 2,) * axes, dtype=torch.float64).to(memory_format=layout)
    tritonconv.reset_stats()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-10, atol=1e-10)
    name = f"conv_transpose{axes}d"
    assert tritonconv.stats() == {name: {"tritonconv": 3, "torch": 0, "fallbacks": {}}}
    model.train()  # a BatchNorm in training mode is never folded
    reference.train()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-10, atol=1e-10)
    tritonconv.unpatch(model)
    transpose = nn.ConvTranspose2d if axes == 2 else nn.ConvTranspose3d
    assert type(model[0]) is transpose and type(model[1]) in (nn.BatchNorm2d, nn.BatchNorm3d)
    assert type(model[2]) is nn.ReLU


@needs_runtime_loops
def test_a_fused_decoder_block_trains_through_the_folded_weights_gradients():
    """In eval mode the folded chain is differentiable in the conv's and the BatchNorm's parameters
    (fine-tuning with frozen statistics), as the unfused chain is."""
    reference = _decoder_block(2)
    model = copy.deepcopy(reference)
    tritonconv.patch(model, fuse=True)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    model(x).square().sum().backward()
    reference(x).square().sum().backward()
    for (name, ours), (_, theirs) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_transposed_layers_take_an_activation():
    layer = tritonconv.ConvTranspose2d(3, 4, 3, stride=2, activation="leaky_relu", negative_slope=0.3).double()
    assert "activation='leaky_relu', negative_slope=0.3" in repr(layer)
    x = torch.randn(1, 3, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.leaky_relu(F.conv_transpose2d(x, layer.weight, layer.bias, stride=2), 0.3))
    layer_3d = tritonconv.ConvTranspose3d(3, 2, 2, stride=2, activation="relu").double()
    x = torch.randn(1, 3, 2, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(layer_3d(x), F.relu(F.conv_transpose3d(x, layer_3d.weight, layer_3d.bias, stride=2)))
