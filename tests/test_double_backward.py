"""Gradients of gradients (issue 17): `gradcheck` and `gradgradcheck` in float64 through the
interpreter for conv2d, conv_transpose2d, conv1d, conv_transpose1d, conv3d (each 3-D route) and
conv_transpose3d, second derivatives against
torch's in both layouts, a WGAN-GP step through a patched critic, and the first-order path left as
it was (no custom op in a plain backward).

gradcheck runs in its fast mode (random projections of the Jacobians, as torch's own CI runs it):
the full Jacobians cost a minute per case under the interpreter."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import tritonconv
from tritonconv.frontend import differentiable

CONV2D_CASES = {
    "stride 2, padding 1, groups 2": dict(stride=2, padding=1, groups=2),
    "dilation 2, padding (2, 1)": dict(padding=(2, 1), dilation=2),
    "'same' with an even kernel (asymmetric padding)": dict(padding="same", kernel=4),
}


def _float64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("case", CONV2D_CASES, ids=list(CONV2D_CASES))
def test_conv2d_passes_gradcheck_and_gradgradcheck(case):
    torch.manual_seed(0)
    arguments = dict(CONV2D_CASES[case])
    kernel = arguments.pop("kernel", 3)
    groups = arguments.get("groups", 1)
    x, weight, bias = _float64(2, 4, 6, 5), _float64(4, 4 // groups, kernel, kernel), _float64(4)
    conv = functools.partial(tritonconv.conv2d, **arguments)
    assert gradcheck(conv, (x, weight, bias), fast_mode=True)
    assert gradgradcheck(conv, (x, weight, bias), fast_mode=True)


@pytest.mark.parametrize(
    "arguments",
    [dict(stride=2, padding=1, output_padding=1, groups=2), dict(stride=1, padding=1, dilation=2)],
    ids=["stride 2, output_padding 1, groups 2", "dilation 2"],
)
def test_conv_transpose2d_passes_gradcheck_and_gradgradcheck(arguments):
    torch.manual_seed(1)
    groups = arguments.get("groups", 1)
    x, weight, bias = _float64(1, 4, 4, 5), _float64(4, 4 // groups, 3, 3), _float64(4)
    conv = functools.partial(tritonconv.conv_transpose2d, **arguments)
    assert gradcheck(conv, (x, weight, bias), fast_mode=True)
    assert gradgradcheck(conv, (x, weight, bias), fast_mode=True)


def test_conv1d_and_conv_transpose1d_pass_gradcheck_and_gradgradcheck():
    torch.manual_seed(2)
    x, weight, bias = _float64(2, 4, 9), _float64(6, 2, 3), _float64(6)
    conv = functools.partial(tritonconv.conv1d, stride=2, padding=1, dilation=1, groups=2)
    assert gradcheck(conv, (x, weight, bias), fast_mode=True)
    assert gradgradcheck(conv, (x, weight, bias), fast_mode=True)
    transposed_weight = _float64(4, 3, 3)
    transposed = functools.partial(tritonconv.conv_transpose1d, stride=2, padding=1, output_padding=1)
    assert gradcheck(transposed, (x, transposed_weight, bias[:3]), fast_mode=True)
    assert gradgradcheck(transposed, (x, transposed_weight, bias[:3]), fast_mode=True)


CONV3D_CASES = {  # each 3-D route: the general kernels, the depthwise forward, a 2-D one on views
    "general, stride 2, padding 1": ((1, 2, 3, 4, 5), (3, 2, 2, 3, 3), dict(stride=(1, 2, 1), padding=1), False),
    "depthwise, dilation 2": ((1, 2, 3, 4, 3), (2, 1, 3, 3, 3), dict(padding=2, dilation=2, groups=2), True),
    "1x3x3 on channels_last_3d (the 2-D kernels)": ((2, 2, 3, 4, 4), (3, 2, 1, 3, 3), dict(padding=(0, 1, 1)), True),
}


@pytest.mark.parametrize("case", CONV3D_CASES, ids=list(CONV3D_CASES))
def test_conv3d_passes_gradcheck_and_gradgradcheck(case):
    torch.manual_seed(3)
    input_shape, weight_shape, arguments, channels_last = CONV3D_CASES[case]
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    x = torch.randn(input_shape, dtype=torch.float64).to(memory_format=layout).requires_grad_()
    weight, bias = _float64(*weight_shape), _float64(weight_shape[0])
    conv = functools.partial(tritonconv.conv3d, **arguments)
    assert gradcheck(conv, (x, weight, bias), fast_mode=True)
    assert gradgradcheck(conv, (x, weight, bias), fast_mode=True)


def test_conv_transpose3d_passes_gradcheck_and_gradgradcheck():
    torch.manual_seed(4)
    x, weight, bias = _float64(1, 2, 2, 3, 3), _float64(2, 3, 2, 3, 3), _float64(3)
    conv = functools.partial(tritonconv.conv_transpose3d, stride=(1, 2, 2), padding=(0, 1, 1), output_padding=(0, 1, 0))
    assert gradcheck(conv, (x, weight, bias), fast_mode=True)
    assert gradgradcheck(conv, (x, weight, bias), fast_mode=True)


def test_a_planted_error_in_a_second_derivative_is_caught(monkeypatch):
    """Mutation check: with the gradients' derivative through a forward scaled by 1.01, the first
    derivatives still pass gradcheck and the second derivatives no longer match torch's. (gradgradcheck
    would fail too, but a failing fast-mode check recomputes the full Jacobians for its message.)"""
    torch.manual_seed(3)
    x, weight, grad_output = _float64(1, 2, 5, 5), _float64(2, 2, 3, 3), _float64(1, 2, 5, 5)
    conv = functools.partial(tritonconv.conv2d, padding=1)
    want = _second_derivatives(functools.partial(F.conv2d, padding=1), x, weight, None, grad_output)
    for got, expected in zip(_second_derivatives(conv, x, weight, None, grad_output), want, strict=True):
        torch.testing.assert_close(got, expected)
    original = differentiable.Gradients.forward
    monkeypatch.setattr(differentiable.Gradients, "forward", lambda self, *args: original(self, *args) * 1.01)
    assert gradcheck(conv, (x, weight), fast_mode=True)
    got = _second_derivatives(conv, x, weight, None, grad_output)
    with pytest.raises(AssertionError, match="not close"):
        for value, expected in zip(got, want, strict=True):
            torch.testing.assert_close(value, expected)


def _second_derivatives(conv, x, weight, bias, grad_output):
    """d/d(x, W, b) of sum(dL/dx ** 2 + dL/dW ** 2), dL/d(x, W) taken with create_graph."""
    y = conv(x, weight, bias)
    grad_x, grad_w = torch.autograd.grad(y, (x, weight), grad_output, create_graph=True)
    penalty = grad_x.pow(2).sum() + grad_w.pow(2).sum()
    return torch.autograd.grad(penalty, (x, weight, grad_output))


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
def test_second_derivatives_match_torch_in_both_layouts(channels_last):
    torch.manual_seed(4)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 8, 6, 6).to(memory_format=layout).requires_grad_()
    weight = torch.randn(8, 8, 3, 3).to(memory_format=layout).requires_grad_()
    bias = torch.randn(8, requires_grad=True)
    grad_output = torch.randn(2, 8, 3, 3).to(memory_format=layout).requires_grad_()
    conv = functools.partial(tritonconv.conv2d, stride=2, padding=1)
    got = _second_derivatives(conv, x, weight, bias, grad_output)
    doubles = [t.detach().double().requires_grad_() for t in (x, weight, bias, grad_output)]
    want = _second_derivatives(functools.partial(F.conv2d, stride=2, padding=1), *doubles)
    for name, g, w in zip(("x", "weight", "grad_output"), got, want, strict=True):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-3, msg=lambda m, name=name: f"{name}: {m}")


def test_double_backward_through_a_fused_relu_matches_torch():
    torch.manual_seed(5)
    x, weight, residual = _float64(1, 4, 5, 5), _float64(4, 4, 3, 3), _float64(1, 4, 5, 5)
    fused = functools.partial(tritonconv.conv2d, padding=1, activation="relu", residual=residual)
    assert gradgradcheck(fused, (x, weight), fast_mode=True)


def test_double_backward_through_a_fused_smooth_activation_says_why_it_cannot():
    x, weight = _float64(1, 2, 4, 4), _float64(2, 2, 3, 3)
    y = tritonconv.conv2d(x, weight, padding=1, activation="silu")
    with pytest.raises(RuntimeError, match=r"double backward .* fused 'silu' epilogue is not supported"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_a_plain_backward_does_not_take_the_differentiable_ops(monkeypatch):
    """The first-order path is the prepared call's, as fast as before: no differentiable Function in it."""

    def refuse(*args):
        raise AssertionError("a first-order backward went through the gradient ops")

    monkeypatch.setattr(differentiable.Gradients, "of", refuse)
    x, weight = torch.randn(1, 4, 6, 6, requires_grad=True), torch.randn(4, 4, 3, 3, requires_grad=True)
    tritonconv.conv2d(x, weight, padding=1).sum().backward()
    tritonconv.conv_transpose2d(x, weight, padding=1).sum().backward()
    assert x.grad is not None and weight.grad is not None


class _Critic(torch.nn.Module):
    """A DCGAN-style critic: strided convolutions, leaky ReLUs, a linear score."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 4, stride=2, padding=1), torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(8, 16, 4, stride=2, padding=1), torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(16, 16, 3, padding=1, groups=2), torch.nn.LeakyReLU(0.2),
        )  # fmt: skip
        self.score = torch.nn.Linear(16 * 2 * 2, 1)

    def forward(self, x):
        return self.score(self.features(x).flatten(1))


def _wgan_gp_step(critic, real, fake, mix, weight=10.0):
    """The critic's WGAN-GP loss and its parameters' gradients: the gradient penalty differentiates
    the critic's input gradient, a double backward through every convolution."""
    interpolated = (mix * real + (1 - mix) * fake).requires_grad_()
    (grad,) = torch.autograd.grad(critic(interpolated).sum(), interpolated, create_graph=True)
    penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + weight * penalty
    critic.zero_grad()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in critic.parameters()]


def test_a_wgan_gp_step_through_a_patched_critic_matches_torch():
    torch.manual_seed(6)
    critic = _Critic().double()
    reference = copy.deepcopy(critic)
    real, fake, mix = (
        torch.randn(2, 3, 8, 8).double(),
        torch.randn(2, 3, 8, 8).double(),
        torch.rand(2, 1, 1, 1).double(),
    )
    report = tritonconv.patch(critic)
    assert len(report.patched) == 3 and not report.skipped
    tritonconv.reset_stats()
    loss, grads = _wgan_gp_step(critic, real, fake, mix)
    assert tritonconv.stats()["conv2d"]["torch"] == 0, "every convolution ran in tritonconv"
    want_loss, want_grads = _wgan_gp_step(reference, real, fake, mix)
    torch.testing.assert_close(loss, want_loss, rtol=1e-9, atol=1e-9)
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-9)
