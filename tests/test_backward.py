"""Backward through Triton: input, weight and bias gradients against torch's float64 autograd."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conv_reference import assert_grads_close, needs_runtime_loops, random_conv_inputs
from test_conv2d_fwd import FP64, SHAPE_IDS, SHAPES

import tritonconv
from tritonconv.plan.dispatch import Plan
from tritonconv.plan.prepared import PreparedConv
from tritonconv.problem.arithmetic import problem_from_tensors
from tritonconv.problem.config import dgrad_by_phase, wgrad_config
from tritonconv.routes import calls as backward

pytestmark = needs_runtime_loops
LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])


def grads_of(x, weight, bias, grad_output, **kwargs):
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    tritonconv.conv2d(*leaves, **kwargs).backward(grad_output)
    return [None if t is None else t.grad for t in leaves]


def run_shape(shape, dtype, channels_last, device):
    _, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias = shape
    x, weight, b = random_conv_inputs(n, c, h, w, k, r, s, groups, bias, dtype, device, channels_last)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out_shape = F.conv2d(x.cpu().double(), weight.cpu().double(), None, **kwargs).shape
    grad_output = torch.randn(out_shape, generator=torch.Generator().manual_seed(7)).to(device, dtype)
    if channels_last:
        grad_output = grad_output.to(memory_format=torch.channels_last)
    assert_grads_close(grads_of(x, weight, b, grad_output, **kwargs), x, weight, b, grad_output, **kwargs)


@LAYOUTS
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gradients_match_torch(shape, channels_last, device):
    """Every table shape (stride, 'same', dilation, groups, depthwise, 1x1, edges) in fp32."""
    run_shape(shape, torch.float32, channels_last, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, FP64], ids=str)
@pytest.mark.parametrize("shape", [SHAPES[4], SHAPES[10], SHAPES[13]], ids=[SHAPE_IDS[i] for i in (4, 10, 13)])
def test_gradients_in_other_dtypes(shape, dtype, device):
    run_shape(shape, dtype, True, device)


@pytest.mark.parametrize("frozen", ["input", "weight", "bias", "input+bias"])
def test_only_requested_gradients_are_computed(frozen, device, monkeypatch):
    """A frozen layer skips wgrad, a first layer skips dgrad: their kernels are never launched."""
    x, weight, bias = random_conv_inputs(2, 4, 6, 5, 6, 3, 3, device=device)
    launched = []
    gradients = (("conv2d_dgrad", "input_grad"), ("conv2d_wgrad", "weight_grad"), ("conv2d_bias_grad", "bias_grad"))
    for name, method in gradients:
        original = getattr(PreparedConv, method)
        monkeypatch.setattr(
            PreparedConv, method, lambda *a, _n=name, _f=original, **k: launched.append(_n) or _f(*a, **k)
        )
    leaves = {"input": x, "weight": weight, "bias": bias}
    for name, tensor in leaves.items():
        tensor.requires_grad_(name not in frozen.split("+"))
    tritonconv.conv2d(x, weight, bias, padding=1).sum().backward()
    expected = {"input": "conv2d_dgrad", "weight": "conv2d_wgrad", "bias": "conv2d_bias_grad"}
    assert sorted(launched) == sorted(v for k, v in expected.items() if k not in frozen.split("+"))
    for name, tensor in leaves.items():
        assert (tensor.grad is None) == (name in frozen.split("+"))


def test_saves_only_what_backward_needs(device):
    x, weight, bias = random_conv_inputs(1, 3, 5, 5, 4, 3, 3, device=device)
    weight.requires_grad_()  # input frozen: dgrad not needed, so the weight need not be saved
    y = tritonconv.conv2d(x, weight, bias)
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()


def test_gradcheck_float64(device):
    if not tritonconv.problem.runtime.supports_fp64_dot():
        pytest.skip("Triton < 3.5 has no fp64 tl.dot")
    x, weight, bias = random_conv_inputs(1, 4, 5, 4, 4, 3, 2, 2, True, torch.float64, device)
    args = [t.requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda *a: tritonconv.conv2d(*a, stride=(2, 1), padding=1, dilation=(1, 2), groups=2), args, fast_mode=True
    )


def test_double_backward_gives_the_second_derivative(device):
    """dX depends on the weight, so a second derivative exists: through create_graph it must be
    torch's, not zero and not an error (the gradient ops are differentiable; tests/test_double_backward.py)."""
    x, weight, _ = random_conv_inputs(1, 2, 4, 4, 2, 3, 3, bias=False, device=device)
    x.requires_grad_()
    weight.requires_grad_()
    (grad,) = torch.autograd.grad(tritonconv.conv2d(x, weight).square().sum(), x, create_graph=True)
    grad.sum().backward()
    x64, weight64 = (t.detach().double().requires_grad_() for t in (x, weight))
    (grad64,) = torch.autograd.grad(F.conv2d(x64, weight64).square().sum(), x64, create_graph=True)
    grad64.sum().backward()
    torch.testing.assert_close(weight.grad.double(), weight64.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-4)


def test_wgrad_is_bitwise_reproducible_across_splits(device):
    """Two runs give identical bits; the split partial sums are added in a fixed order."""
    x, weight, _ = random_conv_inputs(4, 6, 9, 9, 8, 3, 3, bias=False, device=device)
    grad_output = torch.randn(4, 8, 9, 9).to(device)
    problem = problem_from_tensors(x, weight, padding=1)
    config = wgrad_config(problem)
    assert config.split_k > 1
    first = backward.conv2d_wgrad(x, grad_output, problem, False, Plan("implicit_gemm", config, "test"))
    assert torch.equal(
        first, backward.conv2d_wgrad(x, grad_output, problem, False, Plan("implicit_gemm", config, "test"))
    )
    single_split = Plan("implicit_gemm", wgrad_config(problem, target_programs=1), "test")
    single = backward.conv2d_wgrad(x, grad_output, problem, False, single_split)
    torch.testing.assert_close(first, single, rtol=1e-5, atol=1e-5)


# (name, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias): 16 or more channels per group on
# both sides, so the weight gradient takes its tap-major tiles, and strided ones' input gradient goes
# by stride phase.
TAP_MAJOR_SHAPES = [
    ("3x3 pad 1 stride 2", 2, 32, 7, 6, 16, 3, 3, 2, 1, 1, 1, True),
    ("2x3 dilation (2,1) pad (2,0)", 1, 16, 6, 7, 24, 2, 3, 1, (2, 0), (2, 1), 1, False),
    ("groups 2, 16 channels each", 2, 32, 5, 5, 32, 3, 3, 1, 1, 1, 2, False),
    ("1x1", 3, 48, 4, 5, 16, 1, 1, 1, 0, 1, 1, True),
    ("1x1 stride 2: phases no tap reaches", 1, 16, 5, 6, 16, 1, 1, 2, 0, 1, 1, False),
    ("5x4 stride (3,2) dilation 2 pad (3,1)", 1, 16, 11, 9, 16, 5, 4, (3, 2), (3, 1), 2, 1, False),
    ("stride 2 larger than kernel 1x2", 1, 16, 6, 7, 20, 1, 2, 2, 1, 1, 1, False),
    ("stride (1,2) groups 2, 16 out channels each", 2, 32, 5, 6, 32, 3, 3, (1, 2), 1, 1, 2, True),
]


@LAYOUTS
@pytest.mark.parametrize("shape", TAP_MAJOR_SHAPES, ids=[shape[0] for shape in TAP_MAJOR_SHAPES])
def test_tap_major_weight_and_phased_input_gradients(shape, channels_last, device):
    _, n, c, h, w, k, r, s, stride, padding, dilation, groups, _ = shape
    problem = tritonconv.make_problem(
        n=n, c=c, h=h, w=w, k=k, r=r, s=s, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    assert problem.c_per_group % wgrad_config(problem).block_n == 0, "not a tap-major weight gradient"
    assert dgrad_by_phase(problem) == (problem.stride != (1, 1)), "strided shapes go by phase"
    run_shape(shape, torch.float32, channels_last, device)


def test_no_backward_pass_calls_a_torch_convolution(device):
    x, weight, bias = random_conv_inputs(2, 4, 6, 6, 4, 3, 3, 2, True, torch.float32, device, True)
    for t in (x, weight, bias):
        t.requires_grad_()
    y = tritonconv.conv2d(x, weight, bias, stride=2, padding=1, groups=2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y.sum().backward()
    names = {event.name for event in prof.events()}
    assert not {name for name in names if "conv" in name.lower() and name.startswith("aten::")}, names


def test_unbatched_and_strided_grad_output(device):
    """Unbatched input, and a grad_output that is an expanded view (stride 0), as sum() produces."""
    x, weight, bias = random_conv_inputs(1, 3, 6, 5, 4, 3, 3, device=device)
    x = x[0]
    grad_output = torch.ones(1, 1, 1).to(device).expand(4, 6, 5)
    grads = grads_of(x, weight, bias, grad_output, padding=1)
    assert grads[0].shape == x.shape
    batched = [grads[0].unsqueeze(0), *grads[1:]]
    assert_grads_close(batched, x.unsqueeze(0), weight, bias, grad_output.unsqueeze(0), padding=1)


def test_training_steps_follow_torch(device):
    """A small conv net trained with SGD for a few steps takes the same path as with F.conv2d."""
    gen = torch.Generator().manual_seed(11)
    params = [torch.randn(8, 3, 3, 3, generator=gen) * 0.3, torch.randn(8, generator=gen) * 0.1,
              torch.randn(8, 2, 3, 3, generator=gen) * 0.3, torch.randn(4, 8, 1, 1, generator=gen) * 0.3]  # fmt: skip
    data = torch.randn(4, 3, 8, 8, generator=gen)
    target = torch.randn(4, 4, 4, 4, generator=gen)

    def train(conv):
        weights = [p.clone().to(device).requires_grad_() for p in params]
        opt = torch.optim.SGD(weights, lr=0.05)
        losses = []
        for _ in range(4):
            h = torch.relu(conv(data.to(device), weights[0], weights[1], padding=1))
            h = torch.relu(conv(h, weights[2], None, stride=2, padding=1, groups=4))
            loss = F.mse_loss(conv(h, weights[3]), target.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, weights

    torch_losses, torch_weights = train(F.conv2d)
    triton_losses, triton_weights = train(tritonconv.conv2d)
    assert triton_losses == pytest.approx(torch_losses, rel=1e-5)
    for a, b in zip(triton_weights, torch_weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride, expected", [(1, "conv1x1"), (2, None)], ids=["stride1", "stride2"])
def test_1x1_dgrad_runs_the_conv1x1_gemm(stride, expected, device, monkeypatch):
    """dX of a stride-1 1x1 conv is a 1x1 conv of dY with the transposed weight; strided ones are not."""
    from tritonconv.plan import dispatch
    from tritonconv.routes import registry

    used = []
    key = (registry.Pass.DGRAD, registry.Variant.CONV1X1)
    original = registry.REGISTRY[key]
    record = dataclasses.replace(original, prepare=lambda *a: used.append("conv1x1") or original.prepare(*a))
    monkeypatch.setitem(registry.REGISTRY, key, record)
    dispatch.forget_plans()
    x, weight, bias = random_conv_inputs(2, 24, 5, 7, 16, 1, 1, 1, True, torch.float32, device, channels_last=True)
    for t in (x, weight, bias):
        t.requires_grad_()
    y = tritonconv.conv2d(x, weight, bias, stride=stride)
    used.clear()
    grad_output = torch.randn_like(y)
    y.backward(grad_output)
    assert used == ([expected] if expected else [])
    assert_grads_close([x.grad, weight.grad, bias.grad], x, weight, bias, grad_output, stride=stride)
