"""`patch(model, fuse=True)`: BatchNorm folded into the conv, the activation run in its epilogue; and
`tritonconv.Conv2d(activation=...)`. Each fused model must equal the same model unfused."""

import copy

import pytest
import torch
from conv_reference import needs_runtime_loops
from torch import nn

import tritonconv

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def randomize_batchnorms(model):
    """Statistics and affine parameters far from the identity, so a missed fold shows."""
    generator = torch.Generator().manual_seed(7)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return model


class Block(nn.Module):
    """A ResNet-style block written with a forward of its own: found through torch.fx. `relu` runs
    after the residual add, so it is not the conv's to fuse."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.SiLU()
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + x)


ACTIVATION_MODULES = [nn.ReLU(), nn.SiLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.LeakyReLU(0.2)]


def build(activation=None, seed=0):
    torch.manual_seed(seed)
    activation = activation or nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), activation, Block(8))
    return randomize_batchnorms(model).eval()


@pytest.mark.parametrize("activation", ACTIVATION_MODULES, ids=lambda m: repr(m))
def test_fused_eval_model_equals_the_unfused_one(activation):
    reference, model = build(copy.deepcopy(activation)), build(copy.deepcopy(activation))
    report = tritonconv.patch(model, fuse=True)
    assert report.fused == [
        f"0 + 1 (BatchNorm folded) + 2 ({type(activation).__name__} in the epilogue)",
        "3.conv1 + 3.bn1 (BatchNorm folded) + 3.act (SiLU in the epilogue)",
        "3.conv2 + 3.bn2 (BatchNorm folded)",
    ]
    assert "fused: 3.conv2" in str(report)
    tritonconv.reset_stats()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), **TOLERANCE)
    assert tritonconv.stats()["conv2d"] == {"tritonconv": 3, "torch": 0, "fallbacks": {}}
    assert list(model.state_dict()) == list(reference.state_dict())


@needs_runtime_loops
def test_training_mode_batchnorm_is_never_folded_and_train_after_fusing_runs_it():
    reference, model = build(), build()
    report = tritonconv.patch(model, fuse=True)
    for net in (reference, model):
        net.train()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    got, expected = model(x), reference(x)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    got.square().sum().backward()
    expected.square().sum().backward()
    for (name, ref), param in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, **TOLERANCE, msg=name)
    for ref, mine in zip(reference.buffers(), model.buffers(), strict=True):
        torch.testing.assert_close(mine, ref, **TOLERANCE)  # running statistics updated alike
    assert len(report.fused) == 3
    untrained = build().train()
    report = tritonconv.patch(untrained, fuse=True)
    assert report.fused == [] or all("BatchNorm folded" not in chain for chain in report.fused)
    assert any("training mode (never folded)" in why for why in report.not_fused)


@needs_runtime_loops
def test_conv_then_activation_without_batchnorm_fuses_in_training_too():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 1), nn.LeakyReLU(0.1))
    model = copy.deepcopy(reference)
    report = tritonconv.patch(model, fuse=True)
    assert report.fused == ["0 + 1 (GELU in the epilogue)", "2 + 3 (LeakyReLU in the epilogue)"]
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    got, expected = model(x), reference(x)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    got.sum().backward()
    expected.sum().backward()
    for ref, param in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, **TOLERANCE)


def test_unpatch_undoes_fusion_without_a_trace():
    model = build()
    classes = {name: type(module) for name, module in model.named_modules()}
    attributes = {name: set(vars(module)) for name, module in model.named_modules()}
    tritonconv.patch(model, fuse=True)
    clone = copy.deepcopy(model)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
    tritonconv.unpatch(model)
    assert {name: type(module) for name, module in model.named_modules()} == classes
    assert {name: set(vars(module)) for name, module in model.named_modules()} == attributes


def test_shared_activations_and_untraceable_models_are_reported_not_fused():
    torch.manual_seed(0)
    shared = nn.ReLU()
    model = randomize_batchnorms(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), shared, nn.Conv2d(4, 4, 1), shared)
    ).eval()
    report = tritonconv.patch(model, fuse=True)
    assert report.fused == ["0 + 1 (BatchNorm folded)"], "a ReLU called from two places is not one conv's"

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())

        def forward(self, x):
            return self.body(x) if x.sum() > 0 else -self.body(x)  # data-dependent: fx cannot trace it

    branchy = Branchy().eval()
    report = tritonconv.patch(branchy, fuse=True)
    assert report.fused == ["body.0 + body.1 (ReLU in the epilogue)"]
    assert any("torch.fx could not trace" in why for why in report.not_fused)


def test_conv2d_layer_with_an_activation():
    torch.manual_seed(0)
    layer = tritonconv.Conv2d(4, 6, 3, padding=1, activation="leaky_relu", negative_slope=0.3)
    assert "activation='leaky_relu', negative_slope=0.3" in repr(layer)
    x = torch.randn(2, 4, 5, 5)
    expected = nn.functional.leaky_relu(nn.functional.conv2d(x, layer.weight, layer.bias, padding=1), 0.3)
    torch.testing.assert_close(layer(x), expected, **TOLERANCE)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        tritonconv.Conv2d(4, 6, 3, activation="tanh")


def test_a_fused_model_compiles_whole():
    """Under torch.compile the folded weights, the conv (custom op) and the activation trace into one
    graph (fullgraph) and give the eager fused model's result."""
    reference, model = build(nn.SiLU()), build(nn.SiLU())
    tritonconv.patch(model, fuse=True)
    x = torch.randn(1, 3, 6, 6)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), reference(x), **TOLERANCE)
