"""`tritonconv.Conv2d` as a drop-in for `torch.nn.Conv2d`: construction, checkpoints, padding modes,
autocast and training."""

import inspect

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops
from torch import nn

import tritonconv

CONFIGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=8, kernel_size=(3, 2), stride=2, padding=(1, 0), bias=False),
    dict(in_channels=6, out_channels=6, kernel_size=3, padding="same", dilation=2, groups=3),
    dict(in_channels=4, out_channels=4, kernel_size=5, padding=2, groups=4, padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="replicate"),
    dict(in_channels=4, out_channels=6, kernel_size=(2, 3), padding=(1, 2), stride=(1, 2), padding_mode="circular"),
    dict(in_channels=4, out_channels=8, kernel_size=1),
]
IDS = ["plain", "strided-nobias", "same-dilated-grouped", "reflect-depthwise", "replicate", "circular", "1x1"]


def pair(config, device):
    """A torch module and a tritonconv one with identical parameters."""
    torch.manual_seed(0)
    reference = nn.Conv2d(**config).to(device)
    ours = tritonconv.Conv2d(**config).to(device)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_same_construction_repr_and_state_dict(config, device):
    reference, ours = pair(config, device)
    assert isinstance(ours, nn.Conv2d)
    assert repr(ours) == repr(reference)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    back = nn.Conv2d(**config).to(device)
    back.load_state_dict(ours.state_dict())  # and the other way round
    for a, b in zip(back.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_forward_matches_nn_conv2d(config, device):
    reference, ours = pair(config, device)
    x = torch.randn(2, config["in_channels"], 9, 10).to(device)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@needs_runtime_loops
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradients_match_nn_conv2d(config, device):
    reference, ours = pair(config, device)
    x = torch.randn(2, config["in_channels"], 9, 10).to(device)
    grads = []
    for module in (reference, ours):
        leaf = x.clone().requires_grad_()
        module(leaf).square().mean().backward()
        grads.append([leaf.grad, *(p.grad for p in module.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_hooks_and_unbatched_input(device):
    reference, ours = pair(CONFIGS[0], device)
    seen = []
    ours.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    x = torch.randn(4, 9, 10).to(device)
    with torch.no_grad():
        out = ours(x)
        torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-5)
    assert out.shape == (6, 7, 8) and seen == [out.shape]


def test_autocast_computes_in_the_autocast_dtype(device):
    reference, ours = pair(CONFIGS[0], device)
    x = torch.randn(2, 4, 9, 10).to(device)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.no_grad(), torch.autocast(device, dtype=dtype):
        expected, got = reference(x), ours(x)
    assert got.dtype == expected.dtype == dtype
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=5e-2)


@needs_runtime_loops
def test_training_trajectory_matches_nn_conv2d(device):
    """The same small CNN, built from nn.Conv2d and from tritonconv.Conv2d, trained side by side."""

    def build(conv):
        torch.manual_seed(3)
        return nn.Sequential(
            conv(3, 8, 3, padding=1), nn.ReLU(), conv(8, 8, 3, stride=2, padding=1, groups=4, padding_mode="reflect"),
            nn.ReLU(), conv(8, 4, 1),
        ).to(device)  # fmt: skip

    data, target = torch.randn(4, 3, 8, 8).to(device), torch.randn(4, 4, 4, 4).to(device)
    losses = []
    for model in (build(nn.Conv2d), build(tritonconv.Conv2d)):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        run = []
        for _ in range(4):
            loss = F.mse_loss(model(data), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize(
    "name", ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]
)
def test_each_layer_shows_torchs_constructor_parameters_then_the_epilogues(name):
    """Editors and `inspect.signature` see nn.Conv2d's parameters, not `*args, **kwargs`."""
    ours = list(inspect.signature(getattr(tritonconv, name)).parameters)
    torchs = list(inspect.signature(getattr(torch.nn, name)).parameters)
    assert ours[: len(torchs)] == torchs
    assert ours[len(torchs) :] == ([] if name == "Conv1d" else ["activation", "negative_slope"])
