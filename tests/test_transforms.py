"""Every way torch differentiates and batches a convolution (issue 25), for conv1d/2d/3d and the
three transposed kinds, in float64 through the interpreter, against torch's own:

- forward-mode AD: a dual tensor that does not require grad (the silent wrong answer this issue
  found), duals that do, `torch.func.jvp`, forward-over-reverse (Hessian-vector products);
- `torch.func`: per-sample gradients (`vmap(grad)`), `jacrev`, vmapped weights (ensembles);
- `gradcheck(check_forward_ad=True, check_batched_grad=True)`;
- empty batches: every gradient of every kind (dW and db in torch's memory format).

Each check also counts the Triton passes that ran, so a test cannot pass by torch computing."""

import functools

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from conv_reference import assert_float64_close, spy_on
from torch.func import grad, jacfwd, jacrev, jvp, vmap

import tritonconv
from tritonconv.frontend import differentiable, library_ops

# kind -> (ours, torch's, input shape, weight shape, bias length, arguments)
KINDS = {
    "conv1d": (tritonconv.conv1d, F.conv1d, (2, 4, 7), (6, 2, 3), 6, dict(stride=2, padding=1, groups=2)),
    "conv2d": (tritonconv.conv2d, F.conv2d, (2, 4, 3, 4), (4, 2, 3, 3), 4, dict(padding=2, dilation=2, groups=2)),
    "conv3d": (tritonconv.conv3d, F.conv3d, (1, 2, 3, 3, 2), (3, 2, 2, 2, 2), 3, dict(padding=(1, 0, 1))),
    "conv_transpose1d": (tritonconv.conv_transpose1d, F.conv_transpose1d, (2, 4, 5), (4, 3, 3), 3,
                         dict(stride=2, padding=1, output_padding=1)),
    "conv_transpose2d": (tritonconv.conv_transpose2d, F.conv_transpose2d, (1, 4, 3, 2), (4, 2, 3, 3), 4,
                         dict(stride=2, padding=1, output_padding=1, groups=2)),
    "conv_transpose3d": (tritonconv.conv_transpose3d, F.conv_transpose3d, (1, 2, 2, 2, 2), (2, 2, 2, 2, 2), 2,
                         dict(stride=(2, 1, 1))),
}  # fmt: skip


def _operands(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _, _, input_shape, weight_shape, channels, _ = KINDS[kind]
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=gen, dtype=torch.float64)
                 for shape in (input_shape, weight_shape, (channels,)))  # fmt: skip


@pytest.fixture
def passes(monkeypatch) -> list[str]:
    """The differentiable Functions' Triton passes run while the test runs, by name."""
    return spy_on(monkeypatch, differentiable, ("forward_of", "input_grad_of", "weight_grad_of", "bias_grad_of"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_dual_tensor_that_does_not_require_grad_keeps_its_tangent_through_patched_torch(kind, passes):
    """The issue's repro, for every kind: F.convNd patched, the input dual, nothing requiring grad."""
    _ours, _, _, _, _, arguments = KINDS[kind]
    torchs = getattr(F, kind)
    x, weight, bias = _operands(kind)
    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        want = fwAD.unpack_dual(torchs(fwAD.make_dual(x, tangent), weight, bias, **arguments))
    tritonconv.patch_torch()
    try:
        tritonconv.reset_stats()
        with fwAD.dual_level():
            got = fwAD.unpack_dual(getattr(F, kind)(fwAD.make_dual(x, tangent), weight, bias, **arguments))
        assert tritonconv.stats()[kind] == {"tritonconv": 1, "torch": 0, "fallbacks": {}}
    finally:
        tritonconv.unpatch_torch()
    assert got.tangent is not None, "the tangent was dropped"
    assert_float64_close(got.primal, want.primal, "primal")
    assert_float64_close(got.tangent, want.tangent, "tangent")
    assert passes, "no Triton pass ran"


@pytest.mark.parametrize("kind", KINDS)
def test_tangents_of_every_operand_equal_torchs(kind, passes):
    """Duals in input, weight and bias, requiring grad too: the tangent and then the gradient."""
    ours, torchs, _, _, _, arguments = KINDS[kind]
    x, weight, bias = _operands(kind, seed=1)
    tangents = [torch.randn_like(t) for t in (x, weight, bias)]
    results = []
    for function in (ours, torchs):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        with fwAD.dual_level():
            duals = [fwAD.make_dual(t, d) for t, d in zip(leaves, tangents, strict=True)]
            output = fwAD.unpack_dual(function(*duals, **arguments))
            gradients = torch.autograd.grad(output.primal.square().sum(), leaves)
        results.append((output.primal, output.tangent, *gradients))
    for name, got, want in zip(("primal", "tangent", "dx", "dW", "db"), *results, strict=True):
        assert_float64_close(got, want, name)
    assert {"forward_of", "input_grad_of"} & set(passes) and "weight_grad_of" in passes


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_with_forward_ad_and_batched_gradients(kind):
    ours, _, _, _, _, arguments = KINDS[kind]
    operands = tuple(t.requires_grad_() for t in _operands(kind, seed=2))
    checks = dict(check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True)
    assert torch.autograd.gradcheck(functools.partial(ours, **arguments), operands, fast_mode=True, **checks)


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_gradients_and_jacrev_equal_torchs(kind, passes):
    ours, torchs, _, _, _, arguments = KINDS[kind]
    x, weight, bias = _operands(kind, seed=3)

    def loss(function, sample, weight, bias):
        return function(sample.unsqueeze(0), weight, bias, **arguments).square().sum()

    per_sample = [vmap(grad(functools.partial(loss, f), argnums=(0, 1, 2)), in_dims=(0, None, None))(x, weight, bias)
                  for f in (ours, torchs)]  # fmt: skip
    for name, got, want in zip(("dx", "dW", "db"), *per_sample, strict=True):
        assert_float64_close(got, want, f"per-sample {name}")
    for argnum, name in enumerate(("x", "weight")):
        jacobians = [
            jacrev(lambda *a, f=f: f(*a, **arguments), argnums=argnum)(x, weight, bias) for f in (ours, torchs)
        ]
        assert_float64_close(*jacobians, f"jacrev in {name}")
    assert {"input_grad_of", "weight_grad_of", "bias_grad_of"} <= set(passes) or "forward_of" in passes


@pytest.mark.parametrize("kind", KINDS)
def test_vmapped_weights_run_as_one_grouped_convolution(kind, passes):
    """An ensemble: three weights and biases over the same input, and over three inputs."""
    ours, torchs, _, _, _, arguments = KINDS[kind]
    x, weight, bias = _operands(kind, seed=4)
    weights, biases = torch.stack([weight, 2 * weight, -weight]), torch.stack([bias, bias + 1, -bias])
    for in_dims, inputs in (((None, 0, 0), x), ((0, 0, 0), torch.stack([x, -x, 2 * x]))):
        got, want = (vmap(functools.partial(f, **arguments), in_dims=in_dims)(inputs, weights, biases)
                     for f in (ours, torchs))  # fmt: skip
        assert_float64_close(got, want, f"vmap over {in_dims}")
    assert passes


@pytest.mark.parametrize("kind", ["conv2d", "conv3d", "conv_transpose2d"])
def test_func_jvp_and_forward_over_reverse_hessian_vector_products(kind, passes):
    ours, torchs, _, _, _, arguments = KINDS[kind]
    x, weight, bias = _operands(kind, seed=5)
    direction = torch.randn_like(x)

    def results(function):
        call = functools.partial(function, **arguments)
        primal, tangent = jvp(lambda x: call(x, weight, bias).sin().sum(), (x,), (direction,))
        gradient = lambda x: grad(lambda x: call(x, weight, bias).sin().sum())(x)  # noqa: E731
        hvp = jvp(gradient, (x,), (direction,))[1]  # forward over reverse
        return primal, tangent, hvp, jacfwd(lambda w: call(x, w, bias))(weight)

    for name, got, want in zip(("primal", "jvp", "hvp", "jacfwd"), results(ours), results(torchs), strict=True):
        assert_float64_close(got, want, name)
    assert passes


def test_a_planted_error_in_a_tangent_is_caught(monkeypatch):
    """Mutation check: scale the tangent's forward by 1.01 and the comparison with torch fails."""
    x, weight, bias = _operands("conv2d", seed=6)
    tangent = torch.randn_like(x)
    original = differentiable.Gradients.forward
    monkeypatch.setattr(differentiable.Gradients, "forward", lambda self, *args: original(self, *args) * 1.01)
    with fwAD.dual_level():
        got = fwAD.unpack_dual(tritonconv.conv2d(fwAD.make_dual(x, tangent), weight, bias, groups=2)).tangent
        want = fwAD.unpack_dual(F.conv2d(fwAD.make_dual(x, tangent), weight, bias, groups=2)).tangent
    with pytest.raises(AssertionError, match="not close"):
        assert_float64_close(got, want, "tangent")


def test_a_fused_epilogue_under_forward_ad_is_the_convolution_then_torchs_activation():
    x, weight, bias = _operands("conv2d", seed=7)
    residual = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, tangent)
        got = fwAD.unpack_dual(tritonconv.conv2d(dual, weight, bias, padding=2, dilation=2, groups=2,
                                                 activation="silu", residual=residual))  # fmt: skip
        want = fwAD.unpack_dual(F.silu(F.conv2d(dual, weight, bias, padding=2, dilation=2, groups=2) + residual))
    assert_float64_close(got.tangent, want.tangent, "tangent")


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("wanted", ["input", "weight", "bias", "all"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_batch_has_every_gradient(kind, wanted, channels_last):
    ours, torchs, _, _, _, arguments = KINDS[kind]
    x, weight, bias = _operands(kind, seed=8)
    x = x[:0]
    if channels_last and x.dim() in (4, 5):
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    results = []
    for function in (ours, torchs):
        leaves = [t.clone().requires_grad_(wanted in (name, "all"))
                  for t, name in zip((x, weight, bias), ("input", "weight", "bias"), strict=True)]  # fmt: skip
        output = function(*leaves, **arguments)
        wanted_leaves = [t for t in leaves if t.requires_grad]
        gradients = iter(torch.autograd.grad(output.sum(), wanted_leaves))
        results.append((output, *(next(gradients) if t.requires_grad else None for t in leaves)))
    for name, got, want in zip(("output", "dx", "dW", "db"), *results, strict=True):
        if want is None:
            assert got is None, name
            continue
        assert got.shape == want.shape, name
        assert_float64_close(got, want, name)
        if got.numel() == 0:  # no data to lay out: torch's CPU kernels pick an empty tensor's strides by backend
            continue
        assert got.stride() == want.stride(), f"{name}: torch's memory format is {want.stride()}, got {got.stride()}"


def test_the_custom_ops_have_the_same_vmap_rules(passes):
    """vmap over the torch.library ops (what a compiled graph holds): inputs folded into the batch,
    weights as groups, both gradients, against torch per sample."""
    gen = torch.Generator().manual_seed(9)
    xs, weights = (torch.randn(3, 2, 4, 5, 5, generator=gen, dtype=torch.float64),
                   torch.randn(3, 6, 2, 3, 3, generator=gen, dtype=torch.float64))  # fmt: skip
    grad_outputs = torch.randn(3, 2, 6, 5, 5, generator=gen, dtype=torch.float64)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], 2)
    conv = vmap(lambda x, w: library_ops.conv2d_op(x, w, None, *geometry))
    input_grad = vmap(lambda dy, w: library_ops.conv2d_input_grad_op(dy, w, [2, 4, 5, 5], False, *geometry))
    weight_grad = vmap(lambda dy, x: library_ops.conv2d_weight_grad_op(dy, x, [6, 2, 3, 3], False, *geometry))
    bias_grad = vmap(library_ops.conv2d_bias_grad_op)
    for b in range(3):
        x, w, dy = xs[b].requires_grad_(), weights[b].requires_grad_(), grad_outputs[b]
        y = F.conv2d(x, w, padding=1, groups=2)
        want_x, want_w = torch.autograd.grad(y, (x, w), dy)
        assert_float64_close(conv(xs.detach(), weights.detach())[b], y, f"forward {b}")
        assert_float64_close(input_grad(grad_outputs, weights.detach())[b], want_x, f"dX {b}")
        assert_float64_close(weight_grad(grad_outputs, xs.detach())[b], want_w, f"dW {b}")
        assert_float64_close(bias_grad(grad_outputs)[b], dy.sum((0, 2, 3)), f"db {b}")
    folded = vmap(lambda x: library_ops.conv2d_op(x, weights[0].detach(), None, *geometry))(xs.detach())
    assert_float64_close(
        folded, torch.stack([F.conv2d(x, weights[0].detach(), padding=1, groups=2) for x in xs]), "folded"
    )


@pytest.mark.parametrize("activation", [None, "silu"])
def test_batched_gradients_of_a_causal_conv1d_and_of_smooth_fused_activations(activation):
    """gradcheck's batched gradients run the backward under torch's legacy vmap: the causal problem's
    one-sided padding must survive into the gradient ops (it became 'same', a silent wrong answer), and
    a smooth activation's dZ must not reach a kernel with a batched dY."""
    x = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: tritonconv.causal_conv1d(*a, activation), (x, weight, bias),
                                    check_batched_grad=True, fast_mode=True)  # fmt: skip
    x2 = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    weight2 = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    fused = activation or "gelu"
    assert torch.autograd.gradcheck(lambda *a: tritonconv.conv2d(*a, None, 1, 1, activation=fused), (x2, weight2),
                                    check_batched_grad=True, fast_mode=True)  # fmt: skip
