"""One problem, one plan, whichever way it comes in: the same convolution's gradients through every
entry point tritonconv has are bitwise the same, under the flags and states a test suite leaves
behind (TF32 flipped, misaligned operands, a bias or none, channels_last, a tuned cache choosing
Triton or torch's kernel).

The doors: autograd through the patched `F.conv2d`/`F.conv3d` and through `tritonconv.conv2d`,
`torch.nn.grad.conv*_input`/`_weight` and `torch.ops.aten.convolution_backward` under `use_aten()`,
and the custom ops a compiled graph calls. The grids follow PyTorch's own tests of the same property
(`test_functional_grad_conv2d` and `run_grad_conv_test` in its test/nn/test_convolution.py) at
smaller sizes, the interpreter being slow."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import tritonconv
from tritonconv.plan.dispatch import forget_plans
from tritonconv.routes.registry import Variant
from tritonconv.tuning import tuner
from tritonconv.tuning.session import tune_problems


def _misaligned(shape, low, high) -> torch.Tensor:
    """Uniform values in a tensor whose data starts 4 bytes into its storage (another `data_ptr() & 15`)."""
    storage = torch.empty(torch.Size(shape).numel() + 1).uniform_(low, high)
    return storage[1:].view(shape)


def _doors(input, weight, bias, grad_output, dim, **geometry):
    """(dX, dW) of one convolution through every entry point; dW also through aten's backward with a
    bias mask and through the custom op."""
    name = {2: "conv2d", 3: "conv3d"}[dim]  # looked up at each call: patching replaces the function
    grad = {2: (torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight),
            3: (torch.nn.grad.conv3d_input, torch.nn.grad.conv3d_weight)}[dim]  # fmt: skip
    leaves = [t.detach().requires_grad_() for t in (input, weight)]
    answers = {}
    with tritonconv.patched():
        output = getattr(F, name)(leaves[0], leaves[1], bias, **geometry)
        answers["F autograd"] = torch.autograd.grad(output, leaves, grad_output)
    with tritonconv.use_aten():
        output = getattr(F, name)(leaves[0], leaves[1], bias, **geometry)
        answers["aten autograd"] = torch.autograd.grad(output, leaves, grad_output)
        answers["torch.nn.grad"] = (grad[0](input.shape, weight, grad_output, **geometry),
                                    grad[1](input, weight.shape, grad_output, **geometry))  # fmt: skip
        stride, padding, dilation = (geometry.get(name, 1 if name != "padding" else 0) for name in
                                     ("stride", "padding", "dilation"))  # fmt: skip
        axes = [dim * [value] if isinstance(value, int) else list(value) for value in (stride, padding, dilation)]
        groups = geometry.get("groups", 1)
        mask = (True, True, bias is not None)
        sizes = None if bias is None else [weight.shape[0]]
        backward = torch.ops.aten.convolution_backward(grad_output, input, weight, sizes, *axes, False, [0] * dim,
                                                       groups, mask)  # fmt: skip
        answers["aten.convolution_backward"] = backward[:2]
    ops, (stride, padding, dilation) = torch.ops.tritonconv, axes
    op_axes = (stride, padding + padding, dilation)  # the ops take the leading, then the trailing paddings
    answers["custom ops"] = (
        ops.conv2d_input_grad(grad_output, weight, list(input.shape), False, *op_axes, groups),
        ops.conv2d_weight_grad(grad_output, input, list(weight.shape), False, *op_axes, groups),
    )
    if dim == 2:
        leaves = [t.detach().requires_grad_() for t in (input, weight)]
        output = tritonconv.conv2d(leaves[0], leaves[1], bias, **geometry)
        answers["tritonconv.conv2d"] = torch.autograd.grad(output, leaves, grad_output)
    return answers


def _assert_one_answer(answers: dict, what: str) -> None:
    (first_door, first), *others = answers.items()
    for door, (grad_input, grad_weight) in others:
        assert torch.equal(grad_input, first[0]), f"{what}: dX through {door} differs from {first_door}"
        assert torch.equal(grad_weight, first[1]), f"{what}: dW through {door} differs from {first_door}"


CONTEXTS = ("plain", "tf32 off", "misaligned", "bias")


@pytest.mark.parametrize("context", CONTEXTS)
def test_conv2d_gradients_are_bitwise_the_same_through_every_door(context, restore_tf32):
    torch.manual_seed(0)
    if context == "tf32 off":
        torch.backends.cudnn.allow_tf32 = False
    make = _misaligned if context == "misaligned" else (lambda shape, low, high: torch.empty(shape).uniform_(low, high))
    bias = torch.randn(8) if context == "bias" else None
    # PyTorch's grid (stride, kernel, groups, dilation), at 2 x 4 x 7 x 7 instead of 4 x 8 x 32 x 32
    for stride, kernel, groups, dilation in itertools.product((1, 2), (1, 3), (1, 2), (1, 2)):
        input = make((2, 4, 7, 7), -8.0, 8.0)
        weight = make((8, 4 // groups, kernel, kernel), -4.0, 4.0)
        geometry = dict(stride=stride, padding=kernel // 2, dilation=dilation, groups=groups)
        grad_output = torch.randn(F.conv2d(input, weight, **geometry).shape)
        answers = _doors(input, weight, bias, grad_output, 2, **geometry)
        _assert_one_answer(answers, f"{context}, {geometry}, kernel {kernel}")


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no bias"])
def test_conv3d_gradients_are_bitwise_the_same_through_every_door(with_bias):
    torch.manual_seed(1)
    for stride, padding in itertools.product((1, 2), (0, 1)):
        input, weight = torch.randn(1, 2, 4, 4, 5), torch.randn(3, 2, 3, 3, 3)
        bias = torch.randn(3) if with_bias else None
        grad_output = torch.randn(F.conv3d(input, weight, stride=stride, padding=padding).shape)
        answers = _doors(input, weight, bias, grad_output, 3, stride=stride, padding=padding)
        _assert_one_answer(answers, f"stride {stride}, padding {padding}")


@pytest.mark.parametrize("torch_wins", [True, False], ids=["torch route", "triton route"])
def test_a_tuned_problem_is_one_plan_through_every_door(torch_wins, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    forget_plans()
    torch.manual_seed(2)
    input, weight = torch.randn(2, 4, 6, 6), torch.randn(8, 4, 3, 3)
    problem = tritonconv.make_problem(n=2, c=4, h=6, w=6, k=8, r=3, s=3, padding=1)

    def timer(fn):
        return [1.0 if (tuner.timing_now[2] == Variant.TORCH) == torch_wins else 2.0]

    tune_problems([problem], ("fwd", "dgrad", "wgrad"), timer=timer, max_candidates=1)
    grad_output = torch.randn(2, 8, 6, 6)
    answers = _doors(input, weight, None, grad_output, 2, padding=1)
    _assert_one_answer(answers, "tuned")
    chosen = tritonconv.explain(input, weight, padding=1)["backward"]["wgrad"]["variant"]
    assert (chosen == Variant.TORCH) == torch_wins
    forget_plans()
