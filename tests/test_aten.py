"""`tritonconv.use_aten()` (issue 25): tritonconv as `aten::convolution` and
`aten::convolution_backward`, so direct aten calls, `torch.nn.grad`, unpatched `F.conv*d`, autograd
(forward and reverse, second order) and exported programs run its kernels; what it cannot serve
runs torch's kernel, counted. OpInfo-style samples (stride, padding, dilation, groups, transposed,
output_padding, 1-D/2-D/3-D) in float64 through the interpreter, against torch's own kernels."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from conv_reference import assert_float64_close, spy_on

import tritonconv
from tritonconv.frontend import aten as tritonconv_aten

aten = torch.ops.aten
pytestmark = pytest.mark.skipif(not hasattr(torch.library, "get_kernel"), reason="use_aten needs torch >= 2.9")

# (input shape, weight shape, stride, padding, dilation, transposed, output_padding, groups)
SAMPLES = {
    "1-D, stride 2, groups 2": ((2, 4, 7), (6, 2, 3), [2], [1], [1], False, [0], 2),
    "2-D, dilation (2, 1), groups 2": ((2, 4, 6, 5), (6, 2, 3, 3), [1, 2], [1, 0], [2, 1], False, [0, 0], 2),
    "2-D, channels_last, 1x1": ((2, 8, 4, 4), (4, 8, 1, 1), [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
    "3-D, padding 1": ((1, 2, 4, 4, 3), (3, 2, 2, 2, 2), [1, 1, 1], [1, 1, 1], [1, 1, 1], False, [0, 0, 0], 1),
    "1-D transposed, output_padding 1": ((2, 4, 5), (4, 3, 3), [2], [1], [1], True, [1], 1),
    "2-D transposed, groups 2": ((1, 4, 4, 5), (4, 2, 3, 3), [2, 2], [1, 1], [1, 1], True, [1, 1], 2),
    "3-D transposed, dilation 2": ((1, 2, 3, 3, 2), (2, 3, 2, 2, 2), [2, 1, 2], [0, 1, 0], [1, 2, 1], True,
                                   [1, 0, 1], 1),
}  # fmt: skip


def _sample(name: str, seed: int = 0):
    input_shape, weight_shape, stride, padding, dilation, transposed, output_padding, groups = SAMPLES[name]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*input_shape, generator=gen, dtype=torch.float64)
    if "channels_last" in name:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(*weight_shape, generator=gen, dtype=torch.float64)
    bias = torch.randn(weight_shape[1] * groups if transposed else weight_shape[0], generator=gen, dtype=torch.float64)
    return x, weight, bias, (stride, padding, dilation, transposed, output_padding, groups)


@pytest.fixture
def served(monkeypatch) -> list[str]:
    """The direct passes the aten kernels ran, by name."""
    return spy_on(monkeypatch, tritonconv_aten, ("forward_of", "input_grad_of", "weight_grad_of", "bias_grad_of"))


@pytest.mark.parametrize("name", SAMPLES)
def test_aten_convolution_and_its_backward_are_tritonconvs(name):
    x, weight, bias, arguments = _sample(name)
    want = aten.convolution(x, weight, bias, *arguments)
    grad_output = torch.randn_like(want)
    mask = [True, True, True]
    want_grads = aten.convolution_backward(grad_output, x, weight, list(bias.shape), *arguments, mask)
    tritonconv.reset_stats()
    with tritonconv.use_aten():
        got = aten.convolution(x, weight, bias, *arguments)
        got_grads = aten.convolution_backward(grad_output, x, weight, list(bias.shape), *arguments, mask)
        only_dx = aten.convolution_backward(grad_output, x, weight, None, *arguments, [True, False, False])
    assert got.shape == want.shape and got.stride() == want.stride()
    assert_float64_close(got, want, "output")
    for what, g, w in zip(("dx", "dW", "db"), got_grads, want_grads, strict=True):
        assert_float64_close(g, w, what)
    assert_float64_close(only_dx[0], want_grads[0], "dx alone")
    assert only_dx[1] is None and only_dx[2] is None
    stats = tritonconv.stats()
    assert stats["aten.convolution"] == {"tritonconv": 1, "torch": 0, "fallbacks": {}}
    assert stats["aten.convolution_backward"] == {"tritonconv": 2, "torch": 0, "fallbacks": {}}
    assert not tritonconv.frontend.aten.aten_enabled(), "use_aten() put torch's kernels back"


def test_unpatched_functional_convs_autograd_and_nn_grad_run_tritonconv(served):
    """No patch: F.conv2d with 'same' padding, its backward, torch.nn.grad, double backward and
    forward-mode AD all reach tritonconv through aten."""
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, 4, 3, dtype=torch.float64, requires_grad=True)
    grad_output = torch.randn(2, 6, 6, 6, dtype=torch.float64)

    def everything():
        y = F.conv2d(x, weight, padding="same")
        grad_x, grad_w = torch.autograd.grad(y, (x, weight), grad_output, create_graph=True)
        second = torch.autograd.grad(grad_x.square().sum() + grad_w.square().sum(), (x, weight))
        square = weight.detach()[:, :, :3]
        nn_grad = (torch.nn.grad.conv2d_input(x.shape, square, grad_output, padding=1),
                   torch.nn.grad.conv2d_weight(x.detach(), square.shape, grad_output, padding=1))  # fmt: skip
        with fwAD.dual_level():
            tangent = fwAD.unpack_dual(F.conv2d(fwAD.make_dual(x.detach(), grad_x.detach()), weight.detach())).tangent
        return y, grad_x, grad_w, *second, *nn_grad, tangent

    want = everything()
    tritonconv.reset_stats()
    with tritonconv.use_aten():
        got = everything()
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_float64_close(g, w, f"result {index}")
    stats = tritonconv.stats()
    assert stats["aten.convolution"]["torch"] == stats["aten.convolution_backward"]["torch"] == 0
    assert stats["aten.convolution"]["tritonconv"] >= 2 and stats["aten.convolution_backward"]["tritonconv"] >= 3
    assert {"forward_of", "input_grad_of", "weight_grad_of"} <= set(served)


def test_an_exported_program_runs_tritonconv():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)).double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    exported = torch.export.export(model, (x,))
    want = exported.module()(x)
    tritonconv.reset_stats()
    with tritonconv.use_aten():
        got = exported.module()(x)
    assert_float64_close(got, want, "exported program")
    assert tritonconv.stats()["aten.convolution"] == {"tritonconv": 2, "torch": 0, "fallbacks": {}}


def test_a_compiled_model_calls_tritonconv_from_its_graph():
    """Inductor leaves convolutions to an extern call of aten.convolution, which tritonconv serves."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).double()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    want = model(x)
    compiled = torch.compile(model)
    tritonconv.reset_stats()
    with tritonconv.use_aten():
        got = compiled(x)
    assert_float64_close(got, want, "compiled model")
    assert tritonconv.stats()["aten.convolution"] == {"tritonconv": 1, "torch": 0, "fallbacks": {}}


def test_what_tritonconv_cannot_serve_goes_to_torchs_kernel_counted():
    """A complex convolution and a bias of the wrong length: torch's kernel takes both and raises
    its own errors (its CPU kernel has no complex convolution either), and both are counted."""
    x, weight = torch.randn(1, 2, 4, 4, dtype=torch.complex64), torch.randn(3, 2, 3, 3, dtype=torch.complex64)
    calls = ((x, weight, None), (x.real, weight.real, torch.ones(5)))
    expected = []
    for call in calls:
        with pytest.raises((RuntimeError, NotImplementedError)) as raised:
            aten.convolution(*call, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
        expected.append(str(raised.value))
    tritonconv.reset_stats()
    with tritonconv.use_aten():
        for call, message in zip(calls, expected, strict=True):
            with pytest.raises((RuntimeError, NotImplementedError)) as raised:
                aten.convolution(*call, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
            assert str(raised.value) == message
    stats = tritonconv.stats()["aten.convolution"]
    assert stats["tritonconv"] == 0 and stats["torch"] == 2
    assert any("complex64" in reason for reason in stats["fallbacks"])
    assert any("refused" in reason for reason in stats["fallbacks"])


def test_enable_and_disable_aten():
    x, weight = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    tritonconv.reset_stats()
    tritonconv.enable_aten()
    try:
        with tritonconv.use_aten():  # nested: leaves it enabled
            F.conv2d(x, weight)
        assert tritonconv.frontend.aten.aten_enabled()
        F.conv2d(x, weight)
    finally:
        tritonconv.disable_aten()
    F.conv2d(x, weight)
    assert tritonconv.stats()["aten.convolution"]["tritonconv"] == 2
