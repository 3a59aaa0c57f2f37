"""`tritonconv.conv_transpose2d` / `conv_transpose1d` against torch's in float64: forward and every
gradient, every argument, both layouts, unbatched inputs, and torch's own errors."""

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops

import tritonconv
from tritonconv.frontend.transposed import transposed_problem
from tritonconv.problem import suites
from tritonconv.routes.registry import TRANSPOSED_PASSES

TOLERANCE = dict(rtol=1e-5, atol=1e-5)
# (in channels, out channels, kernel, stride, padding, output_padding, groups, dilation)
CASES = {
    "3x3 s2 p1 op1": (8, 16, 3, 2, 1, 1, 1, 1),
    "4x4 s2 p1 (DCGAN)": (16, 8, 4, 2, 1, 0, 1, 1),
    "1x1": (8, 4, 1, 1, 0, 0, 1, 1),
    "groups 2, dilation 2": (8, 16, 3, 1, 0, 0, 2, 2),
    "depthwise s2": (8, 8, 3, 2, 1, 1, 8, 1),
    "rectangular everything": (8, 12, (3, 2), (2, 3), (1, 0), (1, 2), 4, (1, 2)),
    "output padding under dilation": (4, 4, 3, 1, 1, 1, 1, 2),
}


def _reference(x, weight, bias, grad_output, **geometry):
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    y = F.conv_transpose2d(*leaves, **geometry)
    y.backward(grad_output.double())
    return y.detach(), *(leaf.grad for leaf in leaves)


@needs_runtime_loops
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_conv_transpose2d_matches_torch_with_every_gradient(case, channels_last, device):
    c_in, c_out, kernel, stride, padding, output_padding, groups, dilation = CASES[case]
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 5, 6, generator=generator).to(device)
    weight = torch.randn(c_in, c_out // groups, *kernel, generator=generator).to(device)
    bias = torch.randn(c_out, generator=generator).to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    geometry = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    y = tritonconv.conv_transpose2d(*leaves, **geometry)
    expected = F.conv_transpose2d(x, weight, bias, **geometry)
    assert y.shape == expected.shape and y.stride() == expected.stride(), (y.stride(), expected.stride())
    grad_output = torch.randn(y.shape, generator=generator).to(device)
    y.backward(grad_output)
    reference = _reference(x, weight, bias, grad_output, **geometry)
    for name, got, want in zip(("output", "input", "weight", "bias"), (y, *(leaf.grad for leaf in leaves)), reference,
                               strict=True):  # fmt: skip
        torch.testing.assert_close(got.double(), want, **TOLERANCE, msg=name)


@needs_runtime_loops
def test_conv_transpose1d_and_unbatched_inputs(device):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, generator=generator).to(device).requires_grad_()
    weight = torch.randn(4, 3, 3, generator=generator).to(device).requires_grad_()
    y = tritonconv.conv_transpose1d(x, weight, None, 2, 1, 1, 1, 2)
    expected = F.conv_transpose1d(x.double(), weight.double(), None, 2, 1, 1, 1, 2)
    torch.testing.assert_close(y.double(), expected, **TOLERANCE)
    assert y.is_contiguous()
    y.sum().backward()
    x_grad, weight_grad = torch.autograd.grad(expected.sum(), (x, weight))
    torch.testing.assert_close(x.grad.double(), x_grad.double(), **TOLERANCE)
    torch.testing.assert_close(weight.grad.double(), weight_grad.double(), **TOLERANCE)
    unbatched = torch.randn(4, 5, 5, generator=generator).to(device)
    weight_2d = torch.randn(4, 2, 3, 3, generator=generator).to(device)
    with torch.no_grad():
        got = tritonconv.conv_transpose2d(unbatched, weight_2d, stride=2)
    torch.testing.assert_close(got, F.conv_transpose2d(unbatched, weight_2d, stride=2), **TOLERANCE)
    got_1d = tritonconv.conv_transpose1d(unbatched[:, 0], weight)
    torch.testing.assert_close(got_1d, F.conv_transpose1d(unbatched[:, 0], weight), **TOLERANCE)


ERRORS = {
    "input channels": ((1, 3, 5, 5), (4, 2, 3, 3), None, {}),
    "groups not dividing": ((1, 4, 5, 5), (4, 2, 3, 3), None, {"groups": 3}),
    "output padding too large": ((1, 4, 5, 5), (4, 2, 3, 3), None, {"stride": 2, "output_padding": 2}),
    "bias size": ((1, 4, 5, 5), (4, 2, 3, 3), (3,), {}),
    "input dims": ((4, 5), (4, 2, 3, 3), None, {}),
    "negative output": ((1, 4, 1, 1), (4, 2, 3, 3), None, {"padding": 3}),
    "weight dims": ((1, 4, 5, 5), (4, 2, 3), None, {}),
    "zero stride": ((1, 4, 5, 5), (4, 2, 3, 3), None, {"stride": 0}),
    "zero groups": ((1, 4, 5, 5), (4, 2, 3, 3), None, {"groups": 0}),
    "unbatched channels": ((3, 5, 5), (4, 2, 3, 3), None, {}),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_errors_are_torchs(case, device):
    x_shape, weight_shape, bias_shape, geometry = ERRORS[case]
    args = [torch.randn(x_shape, device=device), torch.randn(weight_shape, device=device),
            None if bias_shape is None else torch.randn(bias_shape, device=device)]  # fmt: skip
    with pytest.raises(Exception) as theirs:
        F.conv_transpose2d(*args, **geometry)
    with pytest.raises(type(theirs.value)) as ours:
        tritonconv.conv_transpose2d(*args, **geometry)
    assert str(ours.value) == str(theirs.value)


def test_dtype_mismatch_is_refused_as_torch_refuses_it():
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="expected scalar type Float but found Double"):
        tritonconv.conv_transpose2d(x, weight)


def test_every_pass_runs_tritonconvs_kernels_and_no_torch_convolution(monkeypatch):
    """Forward through the dgrad routes, dx through the forward routes, dW through wgrad."""
    from tritonconv.ops import launch

    launched = []
    original = launch.KernelLaunch.__call__

    def noting(self, *pointers):
        launched.append(self.kernel.__name__)
        return original(self, *pointers)

    monkeypatch.setattr(launch.KernelLaunch, "__call__", noting)
    monkeypatch.setattr(F, "conv2d", None)  # a torch convolution would fail loudly
    monkeypatch.setattr(F, "conv_transpose2d", None)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    weight = torch.randn(4, 8, 3, 3, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    y = tritonconv.conv_transpose2d(x, weight, bias, stride=2, padding=1)
    forward_kernels = list(launched)
    y.sum().backward()
    assert forward_kernels and all("dgrad" in name for name in forward_kernels), forward_kernels
    backward_kernels = launched[len(forward_kernels) :]
    assert any("fwd" in name for name in backward_kernels) and any("wgrad" in name for name in backward_kernels)
    assert "_conv2d_bias_grad_kernel" in backward_kernels


class DCGANGenerator(torch.nn.Module):
    """The DCGAN generator's shape: a latent vector up to an image by 4x4 stride-2 transposed convs."""

    def __init__(self, latent=8, width=8):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.ConvTranspose2d(latent, width * 4, 4, 1, 0, bias=False), torch.nn.BatchNorm2d(width * 4),
            torch.nn.ReLU(), torch.nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False),
            torch.nn.BatchNorm2d(width * 2), torch.nn.ReLU(), torch.nn.ConvTranspose2d(width * 2, 3, 4, 2, 1),
            torch.nn.Tanh(),
        )  # fmt: skip

    def forward(self, z):
        return self.net(z)


class SmallUNet(torch.nn.Module):
    """Two levels: down by a stride-2 conv, up by a stride-2 transposed conv given `output_size`, a skip."""

    def __init__(self, width=4):
        super().__init__()
        self.down1 = torch.nn.Conv2d(3, width, 3, padding=1)
        self.down2 = torch.nn.Conv2d(width, width * 2, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(width * 2, width, 3, stride=2, padding=1)
        self.head = torch.nn.Conv1d(width * 2, 2, 1)

    def forward(self, x):
        skip = torch.relu(self.down1(x))
        low = torch.relu(self.down2(skip))
        up = self.up(low, output_size=skip.shape[-2:])  # odd sizes: output_size picks the output padding
        n, _, h, w = skip.shape
        return self.head(torch.cat([up, skip], 1).flatten(2)).view(n, 2, h, w)


@needs_runtime_loops
@pytest.mark.parametrize("build, shape", [(DCGANGenerator, (2, 8, 1, 1)), (SmallUNet, (2, 3, 9, 7))],
                         ids=["dcgan", "unet"])  # fmt: skip
def test_patched_decoders_match_torch_and_leave_no_transposed_conv_alone(build, shape):

    torch.manual_seed(0)
    reference = build()
    model = __import__("copy").deepcopy(reference)
    report = tritonconv.patch(model)
    assert not report.skipped, report
    transposed = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert transposed and set(transposed) <= set(report.routed)
    tritonconv.reset_stats()
    x = torch.randn(shape)
    got, expected = model(x), reference(x)
    assert tritonconv.stats()["conv_transpose2d"]["tritonconv"] == len(transposed)
    assert tritonconv.stats()["conv_transpose2d"]["torch"] == 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    got.square().sum().backward()
    expected.square().sum().backward()
    for (name, ref), param in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_conv_transpose_layers_are_drop_ins():
    torch.manual_seed(0)
    for ours, theirs, x in (
        (tritonconv.ConvTranspose2d(4, 3, 3, stride=2, padding=1), torch.nn.ConvTranspose2d(4, 3, 3, stride=2,
                                                                                                 padding=1),
         torch.randn(1, 4, 5, 5)),
        (tritonconv.ConvTranspose1d(4, 3, 3, stride=2, padding=1), torch.nn.ConvTranspose1d(4, 3, 3, stride=2,
                                                                                                 padding=1),
         torch.randn(1, 4, 5)),
    ):  # fmt: skip
        theirs.load_state_dict(ours.state_dict())
        size = [10] * (x.dim() - 2)
        torch.testing.assert_close(ours(x, output_size=size), theirs(x, output_size=size), **TOLERANCE)
        torch.testing.assert_close(ours(x), theirs(x), **TOLERANCE)
        assert tritonconv.patch(ours).skipped[0][2] == "already a tritonconv layer"


DECODER_LAYERS = {  # layer: (C_in, C_out, kernel, stride, padding, input size, batch), as the suite's header names them
    "dcgan.up1": (100, 512, 4, 1, 0, 1, 128),
    "dcgan.up2": (512, 256, 4, 2, 1, 4, 128),
    "dcgan.up3": (256, 128, 4, 2, 1, 8, 128),
    "dcgan.up4": (128, 64, 4, 2, 1, 16, 128),
    "dcgan.up5": (64, 3, 4, 2, 1, 32, 128),
    "unet.up1": (1024, 512, 2, 2, 0, 16, 8),
    "unet.up2": (512, 256, 2, 2, 0, 32, 8),
    "unet.up3": (256, 128, 2, 2, 0, 64, 8),
    "unet.up4": (128, 64, 2, 2, 0, 128, 8),
}


def test_the_decoders_suite_holds_the_underlying_convolutions_of_its_layers():
    """Each row is the convolution whose dgrad is the named transposed layer's forward."""
    layers = suites.load_suite("decoders", dtype=torch.float32, layout="contiguous")
    assert [layer.name.split()[0] for layer in layers] == list(DECODER_LAYERS)
    for layer in layers:
        c_in, c_out, kernel, stride, padding, size, batch = DECODER_LAYERS[layer.name.split()[0]]
        x = torch.empty(batch, c_in, size, size, device="meta")
        weight = torch.empty(c_in, c_out, kernel, kernel, device="meta")
        assert transposed_problem(x, weight, None, (stride, padding, 0, 1, 1)) == layer.problem, layer.name


def test_explain_transposed_names_the_passes_that_serve_each_one():
    """Its forward is the underlying convolution's dgrad, its input gradient that convolution's fwd."""
    x, weight = torch.randn(2, 8, 5, 5), torch.randn(8, 4, 3, 3)
    answer = tritonconv.explain_transposed(x, weight, stride=2, padding=1, output_padding=1)
    problem = answer["problem"]
    assert (problem.n, problem.c, problem.h, problem.w, problem.k) == (2, 4, 10, 10, 8)
    assert answer["routes"]["fwd"] == [str(v) for v in tritonconv.routes.registry.served_routes(problem, "dgrad")]
    assert answer["routes"]["dgrad"] == [str(v) for v in tritonconv.routes.registry.served_routes(problem, "fwd")]
    plans = {name: tritonconv.plan.dispatch.plan_pass(problem, served) for name, served in TRANSPOSED_PASSES.items()}
    assert (answer["variant"], answer["config"]) == (plans["fwd"].variant, plans["fwd"].config.as_dict())
    for name in ("dgrad", "wgrad"):
        assert answer["backward"][name]["variant"] == plans[name].variant
        assert answer["backward"][name]["config"] == plans[name].config.as_dict()
    with pytest.raises(RuntimeError, match="output padding must be smaller than either stride or dilation"):
        tritonconv.explain_transposed(x, weight, stride=1, output_padding=1)


def test_a_dy_of_another_layout_in_a_later_backward_gets_launches_of_its_own():
    """The backward of one transposed call, first with a contiguous dY, then a channels_last one,
    then contiguous again: each gives torch's gradients (a launch prepared for the first dY's
    strides once served the second and gave wrong ones)."""
    torch.manual_seed(11)
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for layout in (torch.contiguous_format, torch.channels_last, torch.contiguous_format):
        y = tritonconv.conv_transpose2d(x, weight, stride=2, padding=1)
        grad_output = torch.randn(y.shape, dtype=torch.float64).contiguous(memory_format=layout)
        got = torch.autograd.grad(y, (x, weight), grad_output)
        want = torch.autograd.grad(F.conv_transpose2d(x, weight, stride=2, padding=1), (x, weight), grad_output)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
