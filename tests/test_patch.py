"""`tritonconv.models.patch` on models written the way users write them, `patched()`, fallbacks, compile.

Each test builds a model twice from one seed: a reference left to torch, and a copy that is patched.
Patched, it must give the same outputs, gradients and training trajectory; unpatched, no trace.
"""

import copy
import io
import logging

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops
from torch import nn

import tritonconv
from tritonconv.frontend import fallback
from tritonconv.models.patch import torch_is_patched

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


class Block(nn.Module):
    """Nested, with a conv used twice and a frozen one."""

    def __init__(self, channels):
        super().__init__()
        self.shared = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.frozen = nn.Conv2d(channels, channels, 1, bias=False)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.frozen(torch.relu(self.shared(torch.relu(self.shared(x))))) + x


class PlainSubclass(nn.Conv2d):
    """A user subclass that adds a method but keeps nn.Conv2d's forward: patchable."""

    def describe(self):
        return f"{self.in_channels}->{self.out_channels}"


class CustomForward(nn.Conv2d):
    """A user subclass with its own forward: kept, its functional convolution routed."""

    def forward(self, x):
        return super().forward(x) * 2


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="zeros"), nn.ReLU())
        self.blocks = nn.ModuleList([Block(8), Block(8)])
        self.heads = nn.ModuleDict(
            {
                "circular": nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular", groups=8),
                "replicate": PlainSubclass(8, 4, (3, 1), padding=(1, 0), padding_mode="replicate"),
                "custom": CustomForward(4, 4, 1),
                "up": nn.ConvTranspose2d(4, 4, 2, stride=2),
            }
        )
        self.sequence = nn.Conv1d(4, 4, 3, padding="same", dilation=2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.heads["replicate"](self.heads["circular"](x))
        x = self.heads["up"](self.heads["custom"](x))
        n, c, h, w = x.shape
        return self.sequence(x.flatten(2)).view(n, c, h, w)


def build(seed=3):
    torch.manual_seed(seed)
    return UserModel()


def conv_classes(model):
    return {name: type(module) for name, module in model.named_modules()}


def test_patch_reports_every_conv_and_swaps_only_what_it_serves():
    model = build()
    params_before = {name: param for name, param in model.named_parameters()}
    keys_before = list(model.state_dict())
    report = tritonconv.patch(model)
    assert sorted(report.patched) == sorted(
        ["stem.0", "blocks.0.shared", "blocks.0.frozen", "blocks.1.shared", "blocks.1.frozen",
         "heads.circular", "heads.replicate", "sequence"]
    )  # fmt: skip
    assert report.routed == ["heads.custom", "heads.up"]  # a custom forward, and a transposed convolution
    assert not report.skipped
    assert "routed" in str(report) and "8 patched, 2 routed, 0 left alone" in str(report)
    assert type(model.heads["custom"]).forward is not CustomForward.forward  # routed around its own forward
    for name in report.patched:
        module = model.get_submodule(name)
        assert isinstance(module, (tritonconv.Conv2d, tritonconv.Conv1d)), name
    assert isinstance(model.heads["replicate"], PlainSubclass) and model.heads["replicate"].describe() == "8->4"
    assert type(model.heads["replicate"]).__name__ == "PlainSubclass"
    assert all(param is params_before[name] for name, param in model.named_parameters()), "Parameters replaced"
    assert list(model.state_dict()) == keys_before
    assert not model.blocks[0].frozen.weight.requires_grad


@needs_runtime_loops
def test_patched_model_gives_the_same_outputs_and_gradients_and_hooks_fire():
    reference, model = build(), build()
    calls = {"reference": [], "patched": []}
    for net, seen in ((reference, calls["reference"]), (model, calls["patched"])):
        net.blocks[0].shared.register_forward_hook(lambda m, i, o, seen=seen: seen.append(("forward", o.shape)))
        net.stem[0].register_full_backward_hook(lambda m, gi, go, seen=seen: seen.append(("backward", go[0].shape)))
    tritonconv.patch(model)
    tritonconv.reset_stats()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    expected, got = reference(x), model(x)
    served = tritonconv.stats()  # every conv the model ran went through tritonconv, none to torch
    assert served["conv2d"] == {"tritonconv": 10, "torch": 0, "fallbacks": {}}  # the custom forward's too
    assert served["conv1d"] == {"tritonconv": 1, "torch": 0, "fallbacks": {}}
    torch.testing.assert_close(got, expected, **TOLERANCE)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)
    for (name, ref), param in zip(reference.named_parameters(), model.parameters(), strict=True):
        if ref.grad is None:
            assert param.grad is None, name
        else:
            torch.testing.assert_close(param.grad, ref.grad, **TOLERANCE, msg=name)
    assert calls["patched"] == calls["reference"], "hooks fired differently"
    assert calls["patched"].count(("forward", torch.Size([2, 8, 4, 4]))) == 2  # the shared conv, twice
    assert calls["patched"][-1] == ("backward", torch.Size([2, 8, 4, 4]))


@needs_runtime_loops
def test_training_follows_the_same_trajectory_with_an_optimizer_built_before_patching():
    reference, model = build(), build()
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9) for net in (reference, model)]
    tritonconv.patch(model)  # after the optimizer: it must still hold the live Parameters
    generator = torch.Generator().manual_seed(1)
    data = [(torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator))]
    losses = {0: [], 1: []}
    for _ in range(3):
        for index, (net, optimizer) in enumerate(zip((reference, model), optimizers, strict=True)):
            optimizer.zero_grad()
            loss = F.mse_loss(net(data[0][0]), data[0][1])
            loss.backward()
            optimizer.step()
            losses[index].append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for ref, param in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(param, ref, **TOLERANCE)


def test_unpatch_leaves_no_trace():
    model = build()
    classes = conv_classes(model)
    attributes = {name: set(vars(module)) for name, module in model.named_modules()}
    report = tritonconv.patch(model)
    assert sorted(tritonconv.unpatch(model)) == sorted(report.patched + report.routed)
    assert conv_classes(model) == classes
    assert {name: set(vars(module)) for name, module in model.named_modules()} == attributes
    assert not any(isinstance(m, (tritonconv.Conv2d, tritonconv.Conv1d)) for m in model.modules())


def test_include_and_exclude_by_pattern_or_predicate():
    model = build()
    report = tritonconv.patch(model, include="blocks.*", exclude=["*.frozen"])
    assert sorted(report.patched) == ["blocks.0.shared", "blocks.1.shared"]
    reasons = {name: reason for name, _, reason in report.skipped}
    assert reasons["stem.0"] == "not included" and reasons["blocks.0.frozen"] == "excluded"
    tritonconv.unpatch(model)
    only_1x1 = tritonconv.patch(model, include=lambda name, module: module.kernel_size == (1, 1))
    assert sorted(only_1x1.patched) == ["blocks.0.frozen", "blocks.1.frozen"]
    assert only_1x1.routed == ["heads.custom"]  # 1x1 too, with a forward of its own
    again = {name: reason for name, _, reason in tritonconv.patch(model).skipped}
    assert again["blocks.0.frozen"] == "already patched" and "blocks.0.shared" not in again


@pytest.mark.filterwarnings("ignore:Complex modules are a new feature")
def test_the_model_itself_a_channels_last_model_and_other_dtypes():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1).to(memory_format=torch.channels_last)
    reference = copy.deepcopy(conv)
    assert tritonconv.patch(conv).patched == [""]
    x = torch.randn(2, 4, 5, 5).to(memory_format=torch.channels_last)
    got = conv(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, reference(x), **TOLERANCE)
    complex_conv = nn.Conv2d(2, 2, 1).to(torch.complex64)
    assert tritonconv.patch(complex_conv).skipped == [("", "Conv2d", "dtype torch.complex64 is not supported")]
    lazy = nn.LazyConv2d(4, 3)
    assert "lazy" in tritonconv.patch(lazy).skipped[0][2]
    assert tritonconv.patch(nn.Conv3d(2, 2, 1)).patched == [""]
    assert tritonconv.patch(nn.ConvTranspose3d(2, 2, 1)).routed == [""]


def test_a_patched_model_survives_deepcopy_and_save_load():
    model = build()
    tritonconv.patch(model)
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)
    for clone in (copy.deepcopy(model), _save_load(model)):
        assert conv_classes(clone) == conv_classes(model)
        torch.testing.assert_close(clone(x), expected)
        tritonconv.unpatch(clone)
        assert type(clone.stem[0]) is nn.Conv2d and type(model.stem[0]) is not nn.Conv2d


def _save_load(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_patched_routes_the_functional_forms_and_restores_them_even_on_error():
    originals = (F.conv2d, F.conv1d, torch.conv2d, torch.conv1d)
    tritonconv.reset_stats()
    x, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with tritonconv.patched():
        assert torch_is_patched()
        with tritonconv.patched():  # nested: the inner exit must not unroute the outer
            pass
        assert torch_is_patched()
        torch.testing.assert_close(F.conv2d(x, weight, padding=1), originals[0](x, weight, padding=1), **TOLERANCE)
        torch.conv1d(torch.randn(1, 2, 7), torch.randn(3, 2, 3))
        nn.Conv2d(2, 3, 1)(x)  # unpatched modules call F.conv2d: routed too
    assert (F.conv2d, F.conv1d, torch.conv2d, torch.conv1d) == originals
    assert tritonconv.stats()["conv2d"]["tritonconv"] == 2 and tritonconv.stats()["conv1d"]["tritonconv"] == 1
    with pytest.raises(KeyError), tritonconv.patched():
        raise KeyError("the body failed")
    assert (F.conv2d, F.conv1d, torch.conv2d, torch.conv1d) == originals
    tritonconv.patch_torch()
    tritonconv.patch_torch()
    tritonconv.unpatch_torch()
    assert (F.conv2d, F.conv1d, torch.conv2d, torch.conv1d) == originals


def test_calls_tritonconv_cannot_serve_go_to_torch_counted_and_logged_once(caplog, monkeypatch):
    tritonconv.reset_stats()
    model = nn.Conv2d(2, 2, 3)
    tritonconv.patch(model)
    meta = torch.randn(1, 2, 5, 5, device="meta")
    with caplog.at_level(logging.WARNING, logger="tritonconv"):
        assert F.conv2d(meta, model.weight.to("meta")).shape == (1, 2, 3, 3)  # unpatched: torch
        with tritonconv.patched():
            for _ in range(3):
                assert F.conv2d(meta, model.weight.to("meta")).device.type == "meta"
            complex_input = torch.randn(1, 2, 5, 5, dtype=torch.complex64)
            F.conv2d(complex_input, torch.randn(2, 2, 3, 3, dtype=torch.complex64))

        def refuse(*args, **kwargs):
            raise NotImplementedError("not this one")

        monkeypatch.setattr(
            type(model), "_convolve", staticmethod(lambda *a: fallback.serve("conv2d", refuse, F.conv2d, *a))
        )
        assert model(torch.randn(1, 2, 5, 5)).shape == (1, 2, 3, 3)
    counts = tritonconv.stats()["conv2d"]
    assert counts["tritonconv"] == 0 and counts["torch"] == 5
    assert counts["fallbacks"]["a meta tensor"] == 3
    assert any("complex64" in reason for reason in counts["fallbacks"])
    assert any("not this one" in reason for reason in counts["fallbacks"])
    logged = [record.getMessage() for record in caplog.records if record.name == "tritonconv"]
    assert len(logged) == 3 and sum("meta" in message for message in logged) == 1


def test_errors_are_torchs_own_when_torch_refuses_too():
    model = nn.Conv2d(3, 4, 3)
    tritonconv.patch(model)
    with pytest.raises(RuntimeError) as ours:
        model(torch.randn(1, 5, 6, 6))
    with pytest.raises(RuntimeError) as theirs:
        nn.Conv2d(3, 4, 3)(torch.randn(1, 5, 6, 6))
    assert str(ours.value) == str(theirs.value)


@needs_runtime_loops
def test_torch_compile_of_a_patched_model_on_cpu():
    """The custom op keeps the graph whole (fullgraph) and gives the same outputs and gradients."""
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Conv1d(2, 2, 1))
    model = copy.deepcopy(reference)
    tritonconv.patch(model)
    x = torch.randn(1, 3, 6, 6)

    def run(net):
        y = net[2](net[1](net[0](x)))
        return net[3](y.flatten(2))

    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
    got, expected = compiled(model), run(reference)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    got.sum().backward()
    expected.sum().backward()
    for ref, param in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, **TOLERANCE)


def test_patch_refuses_what_is_not_a_module_and_its_table_aligns():
    with pytest.raises(TypeError, match=r"expects a torch\.nn\.Module .*; got str"):
        tritonconv.patch("notamodel")
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ConvTranspose2d(2, 2, 2))
    lines = str(tritonconv.patch(model)).splitlines()
    header, rule, *rows = lines[:4]
    status_column = header.index("status")
    assert rule.index(" ") == len("module") and all(row[status_column - 2 : status_column] == "  " for row in rows)
    assert [row.split()[1] for row in rows] == ["patched", "routed"]
