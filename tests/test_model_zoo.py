"""`patch` on model-zoo patterns (stand-ins in `model_zoo.py`): conv subclasses with their own forward
served through routed functional calls, and norm-act modules folded by `fuse=True`."""

import copy
import threading

import model_zoo
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonconv
from tritonconv.models import fusion, routing
from tritonconv.models.patch import torch_is_patched
from tritonconv.problem.torch_reference import TORCH_CONV2D

TOLERANCE = dict(rtol=1e-4, atol=1e-4)
CUSTOM_FORWARD_MODELS = {
    "nfnet": (model_zoo.NFNetStyle, ["stem", "conv1", "conv2", "same"], 4),
    "bit": (model_zoo.BiTStyle, ["stem", "conv1", "conv2"], 3),
    "tf_efficientnet": (model_zoo.TFEfficientNetStyle, ["conv_stem", "conv_dw"], 5),
}


@pytest.mark.parametrize("name", CUSTOM_FORWARD_MODELS)
def test_patch_alone_serves_every_conv_of_custom_forward_models(name):
    """Every conv call goes through tritonconv (none to torch), and outputs and gradients match."""
    build, routed, conv_calls = CUSTOM_FORWARD_MODELS[name]
    torch.manual_seed(0)
    reference = build()
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model)
    assert report.routed == routed and not report.skipped
    tritonconv.reset_stats()
    x = torch.randn(2, 3, 15, 13, requires_grad=True)  # odd sizes: uneven 'same' padding
    got, expected = model(x), reference(x)
    assert tritonconv.stats()["conv2d"] == {"tritonconv": conv_calls, "torch": 0, "fallbacks": {}}
    assert not routing.routes_installed() and F.conv2d is TORCH_CONV2D, "routing outlived the forward"
    torch.testing.assert_close(got, expected, **TOLERANCE)
    grad = torch.randn_like(expected)
    got.backward(grad)
    expected_input_grad = torch.autograd.grad(expected, x, grad, retain_graph=True)[0]
    expected.backward(grad)
    for (param_name, ref), param in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, **TOLERANCE, msg=param_name)
    assert x.grad is not None and torch.allclose(x.grad, 2 * expected_input_grad, **TOLERANCE)
    assert sorted(tritonconv.unpatch(model)) == sorted(report.patched + routed)
    assert {type(m) for m in model.modules()} == {type(m) for m in reference.modules()}


def test_routing_reaches_only_the_routed_modules_thread():
    """While a routed forward runs in one thread, another thread's F.conv2d is torch's own."""
    conv = model_zoo.StdConv2d(2, 2, 3)
    tritonconv.patch(conv)
    inside, outside = threading.Event(), threading.Event()
    seen = {}
    original_forward = model_zoo.StdConv2d.forward

    def slow_forward(self, x):
        inside.set()
        outside.wait(5)
        return original_forward(self, x)

    tritonconv.reset_stats()
    model_zoo.StdConv2d.forward = slow_forward
    try:
        worker = threading.Thread(target=lambda: seen.setdefault("y", conv(torch.randn(1, 2, 5, 5))))
        worker.start()
        assert inside.wait(5)
        assert routing.routes_installed()
        F.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3))  # this thread: not routed
        outside.set()
        worker.join(5)
    finally:
        model_zoo.StdConv2d.forward = original_forward
    assert seen["y"].shape == (1, 2, 3, 3)
    assert tritonconv.stats()["conv2d"]["tritonconv"] == 1 and not routing.routes_installed()


def test_a_routed_module_inside_patched_keeps_the_global_routing():
    conv = model_zoo.StdConv2d(2, 2, 3)
    tritonconv.patch(conv)
    with tritonconv.patched():
        conv(torch.randn(1, 2, 5, 5))
        assert torch_is_patched()
    assert F.conv2d is TORCH_CONV2D


FUSION_MODELS = {
    "regnet": model_zoo.RegNetStyle,
    "efficientnet": model_zoo.EfficientNetStyle,
    "mobilenetv3": model_zoo.MobileNetV3Style,
    "regnet, untraceable top": model_zoo.UntraceableRegNetStyle,
}


@pytest.mark.parametrize("name", FUSION_MODELS)
def test_fuse_folds_every_norm_act_that_follows_a_conv(name):
    torch.manual_seed(0)
    reference = FUSION_MODELS[name]()
    for module in reference.modules():  # statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    reference.eval()
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model, fuse=True)
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(model.get_submodule(n), fusion._PassedThrough) for n in norms), report
    assert sum("BatchNorm folded" in chain for chain in report.fused) == len(norms)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), **TOLERANCE)
    model.train(), reference.train()
    torch.testing.assert_close(model(x), reference(x), **TOLERANCE)  # training: the norm-acts run again
    tritonconv.unpatch(model)
    assert {type(m) for m in model.modules()} == {type(m) for m in reference.modules()}


def test_a_norm_act_in_training_mode_is_never_folded():
    model = model_zoo.RegNetStyle().train()
    report = tritonconv.patch(model, fuse=True)
    assert not any("BatchNorm" in chain for chain in report.fused)  # conv -> activation chains may fuse
    norm_acts = [n for n, m in model.named_modules() if fusion.is_norm_act(m)]
    assert sum("training mode" in why for why in report.not_fused) == len(norm_acts)


def test_the_report_says_how_each_module_is_served():
    model = model_zoo.TFEfficientNetStyle().eval()
    table = str(tritonconv.patch(model, fuse=True))
    assert any(line.split()[:2] == ["conv_stem", "routed"] for line in table.splitlines()), table
    assert "functional convolutions it calls go to tritonconv" in table
    assert "se.reduce" in table and "patched" in table
    assert "conv_pw + bn3 (BatchNorm folded)" in table


def test_a_real_hugging_face_bit_is_served_whole_by_patch_alone():
    """Hugging Face's own BiT (its `WeightStandardizedConv2d` everywhere, 'SAME' padding), tiny."""
    transformers = pytest.importorskip("transformers", reason="transformers is a dev dependency (pyproject.toml)")
    config = transformers.BitConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    num_groups=2, layer_type="preactivation", global_padding="SAME")  # fmt: skip
    torch.manual_seed(0)
    reference = transformers.BitModel(config)
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model)
    assert not report.patched and not report.skipped and len(report.routed) == 9
    tritonconv.reset_stats()
    x = torch.randn(2, 3, 15, 15)
    got, expected = model(x).last_hidden_state, reference(x).last_hidden_state
    assert tritonconv.stats()["conv2d"] == {"tritonconv": 9, "torch": 0, "fallbacks": {}}
    torch.testing.assert_close(got, expected, **TOLERANCE)
    got.sum().backward()
    expected.sum().backward()
    for (name, ref), param in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, **TOLERANCE, msg=name)
