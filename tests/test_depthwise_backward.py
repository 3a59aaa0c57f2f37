"""Depthwise backward: dgrad as a depthwise conv with the flipped weight, wgrad by its own kernel."""

import dataclasses
import functools

import pytest
import torch
from conv_reference import needs_runtime_loops, random_conv_inputs, recording_launcher
from test_backward import run_shape

import tritonconv
from tritonconv.ops import wgrad as wgrad_ops
from tritonconv.plan import dispatch
from tritonconv.plan.dispatch import Plan, backward_variants, heuristic_backward_config
from tritonconv.problem.config import depthwise_wgrad_config
from tritonconv.routes import calls as backward
from tritonconv.routes import registry

pytestmark = needs_runtime_loops
LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])

# (name, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias, dgrad is a depthwise conv)
SHAPES = [
    ("3x3 pad 1", 2, 5, 7, 6, 5, 3, 3, 1, 1, 1, 5, True, True),
    ("7x7 pad 3 dilation 2", 1, 3, 15, 13, 3, 7, 7, 1, 3, 2, 3, False, True),
    ("same, even 4x2 kernel", 1, 4, 6, 7, 4, 4, 2, 1, "same", 1, 4, True, True),
    ("valid 5x3", 2, 3, 8, 6, 3, 5, 3, 1, 0, 1, 3, False, True),
    ("1x1 with padding: general dgrad", 1, 3, 4, 5, 3, 1, 1, 1, 1, 1, 3, False, False),
    ("stride 2: general dgrad", 2, 4, 9, 8, 4, 3, 3, 2, 1, 1, 4, True, False),
    ("multiplier 2: general dgrad", 1, 3, 6, 6, 6, 3, 3, 1, 1, 1, 3, False, False),
]


@LAYOUTS
@pytest.mark.parametrize("shape", SHAPES, ids=[shape[0] for shape in SHAPES])
def test_depthwise_gradients_match_torch(shape, channels_last, device, monkeypatch):
    """Every gradient against float64 torch, and each pass took the route the rule gives it."""
    *geometry, as_depthwise_conv = shape
    routes = []
    for name, pass_name in (("depthwise_dgrad", registry.Pass.DGRAD), ("depthwise_wgrad", registry.Pass.WGRAD)):
        key = (pass_name, registry.Variant.DEPTHWISE)
        spec = registry.REGISTRY[key]
        record = functools.partial(recording_launcher, routes, name, spec.prepare)
        monkeypatch.setitem(registry.REGISTRY, key, dataclasses.replace(spec, prepare=record))
    dispatch.forget_plans()  # calls prepared before the launchers were wrapped would not show
    run_shape(tuple(geometry), torch.float32, channels_last, device)
    assert routes.count("depthwise_dgrad") == int(as_depthwise_conv)
    assert routes.count("depthwise_wgrad") == 1


def test_depthwise_in_half_precision(device):
    run_shape(SHAPES[0][:-1], torch.float16, True, device)


def test_depthwise_wgrad_splits_and_is_reproducible(device):
    """Several pixel chunks, summed in order: two runs give the same bits and match one chunk."""
    x, weight, _ = random_conv_inputs(2, 6, 16, 16, 6, 3, 3, 6, False, device=device, channels_last=True)
    problem = tritonconv.problem_from_tensors(x, weight, padding=1, groups=6)
    grad_output = torch.randn(problem.output_shape).to(device, memory_format=torch.channels_last)
    config = depthwise_wgrad_config(problem)
    assert config.split_k > 1

    def wgrad(config):
        grad_weight = torch.full(problem.weight_shape, float("nan"), device=device)
        wgrad_ops.prepare_depthwise(x, grad_output, grad_weight, problem, config)(x, grad_output, grad_weight)
        return grad_weight

    first = wgrad(config)
    assert torch.equal(first, wgrad(config))
    single = depthwise_wgrad_config(problem, target_programs=1)
    assert single.split_k == 1
    torch.testing.assert_close(first, wgrad(single), rtol=1e-5, atol=1e-5)
    expected = torch.nn.grad.conv2d_weight(x.double(), weight.shape, grad_output.double(), padding=1, groups=6)
    torch.testing.assert_close(first.double(), expected, rtol=1e-5, atol=1e-5)


def test_a_plan_picks_the_route_and_every_route_agrees(device):
    """Both routes of each depthwise gradient (the specialised one the rule picks first, and the
    general kernels) give the same answer when a plan names them; a plan naming a route the
    problem does not have is refused, never launched."""
    x, weight, _ = random_conv_inputs(1, 4, 6, 6, 4, 3, 3, 4, False, device=device)
    problem = tritonconv.problem_from_tensors(x, weight, padding=1, groups=4)
    grad_output = torch.randn(problem.output_shape).to(device)
    assert backward_variants(problem, "dgrad") == ("depthwise", "implicit_gemm")
    assert backward_variants(problem, "wgrad") == ("depthwise", "implicit_gemm")
    results = {}
    for pass_name, run in (
        ("dgrad", lambda plan: backward.conv2d_dgrad(grad_output, weight, problem, False, plan)),
        ("wgrad", lambda plan: backward.conv2d_wgrad(x, grad_output, problem, False, plan)),
    ):
        for variant in backward_variants(problem, pass_name):
            plan = Plan(variant, heuristic_backward_config(problem, pass_name, variant), "test")
            results[pass_name, variant] = run(plan)
        torch.testing.assert_close(results[pass_name, "depthwise"], results[pass_name, "implicit_gemm"])
        with pytest.raises(ValueError, match="does not compute this problem"):
            run(Plan("conv1x1", heuristic_backward_config(problem, pass_name, "implicit_gemm"), "test"))
