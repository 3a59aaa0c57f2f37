"""Fused epilogues of 3-D convolutions (bias, residual, activation in the forward kernel) and
`patch(fuse=True)` folding Conv3d-BatchNorm3d-activation chains, against unfused torch in float64."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops, random_batchnorm_statistics
from torch import nn
from torch.autograd import gradcheck

import tritonconv
from tritonconv.ops.epilogue import ACTIVATIONS, torch_activation
from tritonconv.plan.prepared import _prepared as PREPARED

# (input shape, weight shape, conv3d keywords, channels_last_3d): each 3-D route's forward.
CASES = {
    "general": ((2, 3, 4, 5, 6), (4, 3, 2, 3, 3), dict(padding=(0, 1, 1), stride=(1, 2, 1)), False),
    "general channels_last_3d": ((2, 3, 4, 5, 6), (4, 3, 3, 3, 3), dict(padding=1), True),
    "depthwise": ((2, 4, 3, 5, 6), (8, 1, 3, 3, 3), dict(padding=1, groups=4), True),
    "planar slices": ((2, 3, 4, 5, 6), (4, 3, 1, 3, 3), dict(padding=(0, 1, 1)), True),  # the 2-D kernels
    "planar columns": ((2, 3, 5, 2, 3), (4, 3, 3, 1, 1), dict(padding=(1, 0, 0)), False),
}


def _operands(case: str, seed: int = 0) -> tuple:
    input_shape, weight_shape, keywords, channels_last = CASES[case]
    generator = torch.Generator().manual_seed(seed)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    x = torch.randn(input_shape, generator=generator, dtype=torch.float64).to(memory_format=layout)
    weight = torch.randn(weight_shape, generator=generator, dtype=torch.float64)
    bias = torch.randn(weight_shape[0], generator=generator, dtype=torch.float64)
    output = F.conv3d(x, weight, bias, **keywords)
    residual = torch.randn(output.shape, generator=generator, dtype=torch.float64)
    return x, weight, bias, residual, keywords


def _unfused(x, weight, bias, residual, keywords, activation, slope):
    y = F.conv3d(x, weight, bias, **keywords)
    y = y if residual is None else y + residual
    return y if activation is None else torch_activation(y, activation, slope)


EPILOGUES = [(activation, with_residual) for activation in (None, *ACTIVATIONS) for with_residual in (False, True)
             if activation or with_residual]  # fmt: skip


@needs_runtime_loops
@pytest.mark.parametrize(("activation", "with_residual"), EPILOGUES, ids=lambda value: str(value))
@pytest.mark.parametrize("case", list(CASES))
def test_fused_3d_values_and_gradients_match_unfused_torch_in_float64(case, activation, with_residual):
    x, weight, bias, residual, keywords = _operands(case)
    residual = residual if with_residual else None
    operands = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    fused_residual = None if residual is None else residual.clone().requires_grad_()
    got = tritonconv.conv3d(*operands, **keywords, activation=activation, residual=fused_residual, negative_slope=0.2)
    reference = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    reference_residual = None if residual is None else residual.clone().requires_grad_()
    expected = _unfused(*reference, reference_residual, keywords, activation, 0.2)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # cuDNN's layout rule (torch's CPU kernels differ by dtype): channels_last_3d when the input is
    assert got.is_contiguous(memory_format=torch.channels_last_3d) == CASES[case][3]
    grad = torch.randn_like(expected)
    wanted = [*operands, *([fused_residual] if residual is not None else [])]
    theirs = [*reference, *([reference_residual] if residual is not None else [])]
    tolerance = 1e-6 if activation == "leaky_relu" else 1e-10  # the slope is a float32 constexpr
    for ours, reference_grad in zip(torch.autograd.grad(got, wanted, grad), torch.autograd.grad(expected, theirs, grad),
                                    strict=True):  # fmt: skip
        torch.testing.assert_close(ours, reference_grad, rtol=tolerance, atol=tolerance)


@needs_runtime_loops
@pytest.mark.parametrize("case", ["general", "planar slices"])
def test_fused_3d_passes_gradcheck(case):
    x, weight, bias, residual, keywords = _operands(case)
    small = (x[:1], weight, bias, residual[:1])
    inputs = tuple(t.detach().clone().requires_grad_() for t in small)

    def fused(x, weight, bias, residual):
        return tritonconv.conv3d(x, weight, bias, **keywords, activation="silu", residual=residual)

    assert gradcheck(fused, inputs, fast_mode=True)


@needs_runtime_loops
def test_a_planar_call_whose_residual_does_not_view_as_its_output_runs_the_3d_kernel():
    x, weight, bias, residual, keywords = _operands("planar slices")
    strided = torch.randn(residual.shape[0], residual.shape[1], residual.shape[2] * 2, *residual.shape[3:],
                          dtype=torch.float64)[:, :, ::2]  # fmt: skip
    before = len(PREPARED)
    got = tritonconv.conv3d(x, weight, bias, **keywords, activation="relu", residual=strided)
    torch.testing.assert_close(got, _unfused(x, weight, bias, strided, keywords, "relu", 0.01))
    assert any(getattr(p, "problem", None) is not None and p.problem.is_3d for p in list(PREPARED.values())[before:])


def test_fused_3d_refuses_as_the_2d_epilogue_does():
    x, weight, bias, residual, keywords = _operands("general")
    with pytest.raises(ValueError, match="activation must be None or one of"):
        tritonconv.conv3d(x, weight, bias, **keywords, activation="tanh")
    with pytest.raises(RuntimeError, match="residual must match the convolution's output"):
        tritonconv.conv3d(x, weight, bias, **keywords, residual=residual[:, :3])


def _video_block() -> nn.Sequential:
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(8),
        nn.ReLU(),  # R(2+1)D spatial
        nn.Conv3d(8, 6, (3, 1, 1), padding=(1, 0, 0)),
        nn.BatchNorm3d(6),
        nn.SiLU(),  # temporal
        nn.Conv3d(6, 6, 3, padding=1, groups=6),
        nn.BatchNorm3d(6),
        nn.LeakyReLU(0.1),  # X3D's depthwise
    ).double()
    return random_batchnorm_statistics(block).eval()


@needs_runtime_loops
@pytest.mark.parametrize("channels_last", [False, True], ids=["ncdhw", "channels_last_3d"])
def test_patch_fuse_folds_batchnorm3d_and_runs_the_activation_in_the_epilogue(channels_last):
    reference = _video_block()
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model, fuse=True)
    assert len(report.fused) == 3 and all("BatchNorm folded" in chain for chain in report.fused), report
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64).to(memory_format=layout)
    tritonconv.reset_stats()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-10, atol=1e-10)
    assert tritonconv.stats() == {"conv3d": {"tritonconv": 3, "torch": 0, "fallbacks": {}}}
    model.train()  # a BatchNorm in training mode is never folded
    reference.train()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-10, atol=1e-10)
    tritonconv.unpatch(model)
    assert type(model[1]) is nn.BatchNorm3d and type(model[0]) is nn.Conv3d


def test_conv3d_layer_takes_an_activation():
    layer = tritonconv.Conv3d(3, 4, 3, padding=1, activation="gelu").double()
    assert "activation='gelu'" in repr(layer)
    x = torch.randn(1, 3, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.gelu(F.conv3d(x, layer.weight, layer.bias, padding=1)))
