"""torch's own convolution as a route (`ops/torch_conv.py`): timed by the tuner beside the Triton
candidates, chosen where it is faster, in every pass and kind; the per-model verdict; caches of the
previous version; the routes under torch.compile and torch.export."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conv_reference import assert_float64_close
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tritonconv
from tritonconv.models.verdict import COLUMNS
from tritonconv.ops import torch_conv
from tritonconv.plan.dispatch import forget_plans
from tritonconv.problem.arithmetic import make_problem
from tritonconv.routes.registry import Pass, Variant, tuned_variants
from tritonconv.tuning import tuner
from tritonconv.tuning.cache import problem_key
from tritonconv.tuning.fingerprint import problem_fingerprint
from tritonconv.tuning.session import device_cache, tune_problems

PASSES = ("fwd", "dgrad", "wgrad")


class AtenSpy(TorchDispatchMode):
    """Counts torch's convolution kernels as they run on data (what the torch route calls), not the
    argument checks tritonconv runs on empty stand-ins."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        convolution = func in (torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default)
        if convolution and args[0].numel() > 0:
            mask = args[-1] if func is torch.ops.aten.convolution_backward.default else None
            name = func.overloadpacket.__name__
            self.calls.append(name if mask is None else f"{name}{tuple(mask)}")
        return func(*args, **(kwargs or {}))


def torch_is(faster_for) -> tuner.Timer:
    """A timer that says torch's kernel takes 1 ms and a Triton one 5 ms for the problems `faster_for`
    accepts, and the other way round elsewhere. It never runs the candidate."""

    def timer(fn):
        problem, _, variant = tuner.timing_now
        torch_wins = faster_for(problem)
        return [1.0 if (variant == Variant.TORCH) == torch_wins else 5.0]

    return timer


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    forget_plans()
    yield tmp_path
    forget_plans()


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.wide = nn.Conv2d(3, 6, 3, padding=1)  # torch wins here
        self.narrow = nn.Conv2d(6, 4, 1, bias=False)  # Triton wins here

    def forward(self, x):
        return self.narrow(torch.relu(self.wide(x)))


def _run(model, x):
    x = x.detach().clone().requires_grad_()
    y = model(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y))
    return y, x.grad, [p.grad for p in model.parameters()]


def test_a_tuned_model_runs_torch_where_torch_is_faster_and_triton_elsewhere(fresh_cache):
    torch.manual_seed(0)
    reference = TwoLayers().double()
    model = copy.deepcopy(reference)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    verdict = tritonconv.tune_model(model, x, passes=PASSES, timer=torch_is(lambda p: p.c == 3), max_candidates=1)

    assert [(row.layer, row.pass_name, row.choice) for row in verdict.rows] == [
        ("wide", "fwd", "torch"), ("wide", "dgrad", "torch"), ("wide", "wgrad", "torch"),
        ("narrow", "fwd", "conv1x1"), ("narrow", "dgrad", "conv1x1"), ("narrow", "wgrad", "implicit_gemm"),
    ]  # fmt: skip
    assert all(row.triton_ms in (1.0, 5.0) and row.torch_ms in (1.0, 5.0) for row in verdict.rows)
    assert [row.speedup for row in verdict.rows] == [1.0] * 3 + [5.0] * 3
    assert [row.triton_route for row in verdict.rows] == ["implicit_gemm"] * 3 + ["conv1x1", "conv1x1", "implicit_gemm"]
    # torch alone: 3 x 1 ms + 3 x 5 ms; chosen: 6 x 1 ms
    assert verdict.line() == "tritonconv serves 3 of 6 layer-passes; convolution time 18 ms -> 6 ms (3.00x over torch)"
    assert (verdict.tuned, verdict.cached, verdict.failed) == (6, 0, 0)
    assert verdict.table().splitlines()[0].split() == list(COLUMNS)

    tritonconv.patch(model)
    tritonconv.reset_stats()
    with AtenSpy() as spy:
        got = _run(model, x)
    # the wide layer's three passes ran torch's kernels (dW and db in one call), the narrow layer none
    assert spy.calls == ["convolution", "convolution_backward(True, False, False)",
                         "convolution_backward(False, True, True)"]  # fmt: skip
    routes = tritonconv.stats(routes=True)["conv2d"]["routes"]
    assert routes == {"torch": 1, "conv1x1": 1}
    want = _run(reference, x)
    assert_float64_close(got[0], want[0], "output")
    assert_float64_close(got[1], want[1], "input gradient")
    for ours, theirs in zip(got[2], want[2], strict=True):
        assert_float64_close(ours, theirs, "parameter gradient")


def test_keeping_torch_out_of_the_choice_gives_triton_routes_only(fresh_cache):
    model, x = TwoLayers().double(), torch.randn(2, 3, 5, 6, dtype=torch.float64)
    verdict = tritonconv.tune_model(
        model, x, passes=PASSES, timer=torch_is(lambda p: True), max_candidates=1, routes="triton"
    )
    assert all(row.choice not in (None, "torch") and row.torch_ms == 1.0 for row in verdict.rows)
    assert verdict.line().startswith("tritonconv serves 6 of 6 layer-passes; convolution time 6 ms -> 30 ms (0.20x")
    tritonconv.patch(model)
    with AtenSpy() as spy:
        _run(model, x)
    assert spy.calls == []
    # Asking for every route again chooses from the stored times: nothing is timed twice.
    again = tritonconv.tune_model(
        model, x, passes=PASSES, timer=lambda fn: pytest.fail("timed again"), max_candidates=1
    )
    assert {row.choice for row in again.rows} == {"torch"} and (again.tuned, again.cached) == (0, 6)


def test_a_cache_written_by_the_previous_version_still_loads(fresh_cache):
    """An entry without torch's time (the format before the torch route) serves its Triton config as
    it is; tuning with torch competing times that problem again, keeping torch out does not."""
    problem = make_problem(n=1, c=4, h=5, w=5, k=4, r=3, s=3, padding=1, dtype=torch.float64)
    tuned = tuned_variants(problem, Pass.FWD)
    old = {"pass": "fwd", "candidates": 2, "failed": [], "device": "interpreter", "variant": "implicit_gemm",
           "config": {"block_m": 16, "block_n": 16, "block_k": 16, "group_m": 8, "block_g": 1,
                      "halo_in_registers": False, "split_k": 1, "num_warps": 4, "num_stages": 2},
           "median_ms": 3.0, "spread_ms": 0.1, "tied": 1, "fingerprint": problem_fingerprint("fwd", tuned)}  # fmt: skip
    path = device_cache().path
    path.write_text(json.dumps({"format": 1, "entries": {problem_key(problem, "fwd", False): old}}))
    x, w = torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(4, 4, 3, 3, dtype=torch.float64)
    answer = tritonconv.explain(x, w, padding=1)
    assert (answer["variant"], answer["config_source"], answer["config"]["block_m"]) == (
        "implicit_gemm", "tuned cache", 16)  # fmt: skip
    assert answer["timing"]["torch_ms"] is None and answer["timing"]["triton_ms"] == 3.0
    assert_float64_close(tritonconv.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), "output")
    timer = torch_is(lambda p: True)
    assert tune_problems([problem], ["fwd"], timer=timer, max_candidates=1, routes="triton").cached == 1
    assert tune_problems([problem], ["fwd"], timer=timer, max_candidates=1).tuned == 1
    answer = tritonconv.explain(x, w, padding=1)
    assert answer["variant"] == "torch"
    assert answer["timing"] == {"chosen": "torch", "source": "tuned cache", "triton_route": "implicit_gemm",
                                "triton_ms": 5.0, "torch_ms": 1.0, "torch_over_chosen": 1.0}  # fmt: skip


def test_ties_within_the_noise_keep_the_triton_kernel(fresh_cache):
    problem = make_problem(n=1, c=4, h=5, w=5, k=4, r=1, s=1, dtype=torch.float64)

    def timer(fn):
        return [0.99] if tuner.timing_now[2] == Variant.TORCH else [1.0]

    assert tune_problems([problem], ["fwd"], timer=timer, max_candidates=1).tuned == 1
    entry = device_cache().entries()[problem_key(problem, "fwd", False)]
    assert entry["variant"] == "conv1x1" and entry["torch_ms"] == 0.99


class EveryKind(nn.Module):
    """One layer of each kind a user's model has, each a separate problem."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(3, 4, 3, padding=1)
        self.conv2d = nn.Conv2d(3, 4, 3, stride=2, padding="valid")
        self.same = nn.Conv2d(3, 4, (2, 3), padding="same", bias=False)  # padded one more at the end
        self.conv3d = nn.Conv3d(3, 4, 2)
        self.transposed = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.fused = tritonconv.Conv2d(3, 4, 3, padding=1, activation="silu")
        self.causal_weight = nn.Parameter(torch.randn(3, 1, 4))

    def forward(self, x2, x3):
        x1 = x2.flatten(2)[..., :9]
        causal = tritonconv.causal_conv1d(x1, self.causal_weight, None, "silu")
        return (self.conv1d(x1).sum() + self.conv2d(x2).sum() + self.same(x2).sum() + self.conv3d(x3).sum()
                + self.transposed(x2).sum() + self.fused(x2).square().sum() + causal.square().sum())  # fmt: skip


def test_every_kind_and_pass_resolves_to_torch_route_with_torchs_values(fresh_cache):
    torch.manual_seed(0)
    reference = EveryKind().double()
    model = copy.deepcopy(reference)
    x2, x3 = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(1, 3, 3, 3, 4, dtype=torch.float64)
    verdict = tritonconv.tune_model(model, x2, x3, passes=PASSES, timer=torch_is(lambda p: True), max_candidates=1)
    assert {row.layer for row in verdict.rows} == {
        "conv1d",
        "conv2d",
        "same",
        "conv3d",
        "transposed",
        "fused",
        "(model)",
    }
    assert {row.choice for row in verdict.rows} == {"torch"}, verdict.table()
    tritonconv.patch(model)
    model(x2, x3)  # the first call of each layer checks its arguments as torch does (running torch's function)
    tritonconv.reset_stats()
    inputs = [t.detach().clone().requires_grad_() for t in (x2, x3)]
    with AtenSpy() as spy:
        model(*inputs).backward()
    assert spy.calls.count("convolution") == 7, spy.calls
    assert not any(name.endswith(("(True, True, False)", "(True, True, True)")) for name in spy.calls)
    counted = tritonconv.stats(routes=True)
    assert {route for op in counted.values() for route in op.get("routes", {})} == {"torch"}, counted
    expected = [t.detach().clone().requires_grad_() for t in (x2, x3)]
    reference(*expected).backward()
    for ours, theirs in zip(inputs, expected, strict=True):
        assert_float64_close(ours.grad, theirs.grad, "input gradient")
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert_float64_close(ours.grad, theirs.grad, f"{name}'s gradient")


def test_the_interpreter_s_own_timer_chooses_torch_everywhere(fresh_cache):
    """torch's CPU kernel against interpreted Triton: the real timer must see torch win every time."""
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv1d(4, 4, 1) if False else nn.Conv2d(4, 4, 1))
    reference = reference.double()
    model = copy.deepcopy(reference)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    verdict = tritonconv.tune_model(model, x, passes=PASSES, max_candidates=1)
    assert {row.choice for row in verdict.rows} == {"torch"}, verdict.table()
    assert all(row.torch_ms < row.triton_ms for row in verdict.rows)
    tritonconv.patch(model)
    got, want = _run(model, x), _run(reference, x)
    assert_float64_close(got[0], want[0], "output")
    assert_float64_close(got[1], want[1], "input gradient")


def test_compiled_and_exported_graphs_hold_tritonconv_ops_serving_torch_route(fresh_cache, monkeypatch):
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 4, 3, padding=1)
    model = copy.deepcopy(reference)
    x = torch.randn(2, 3, 5, 5)
    tritonconv.tune_model(model, x, passes=PASSES, timer=torch_is(lambda p: True), max_candidates=1)
    tritonconv.patch(model)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "tritonconv.conv2d.default" in targets and not any("aten.convolution" in t for t in targets)
    served = []  # inside a custom op a dispatch mode sees nothing: count the route's own aten calls
    aten_convolution = torch_conv.ATEN_CONVOLUTION
    monkeypatch.setattr(torch_conv, "ATEN_CONVOLUTION", lambda *a: served.append(a[0].shape) or aten_convolution(*a))
    got = exported.module()(x)
    assert served == [x.shape]
    torch.testing.assert_close(got, reference(x), atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), reference(x), atol=1e-5, rtol=1e-5)
    assert len(served) == 2


def test_the_host_bench_times_a_call_planned_to_the_torch_route_beside_torch_itself():
    from tritonconv.tools.bench.host import torch_route_rows

    problem = make_problem(n=1, c=4, h=5, w=5, k=4, r=3, s=3, padding=1, layout="channels_last")
    ran = []
    rows = torch_route_rows(problem, "cpu", lambda fn: ran.append(fn()) or 1.0)
    assert rows == {"torch route fwd": 1.0, "torch fwd (same tensors)": 1.0}
    torch.testing.assert_close(ran[0], ran[1], rtol=0, atol=0)  # the same kernel: bitwise the same answer
    # the scratch cache entry is gone with its folder: the forward is planned as before
    x, w = torch.randn(1, 4, 5, 5), torch.randn(4, 4, 3, 3)
    assert tritonconv.explain(x, w, padding=1)["variant"] != Variant.TORCH


def test_where_every_triton_candidate_failed_torch_serves_and_no_triton_time_is_claimed(fresh_cache, monkeypatch):
    problem = make_problem(n=1, c=4, h=5, w=5, k=4, r=3, s=3, padding=1, dtype=torch.float64)
    gate = tuner._gate
    monkeypatch.setattr(tuner, "_gate", lambda workload, variant, config, dtype: gate(workload, variant, config, dtype)
                        if variant == Variant.TORCH else "RuntimeError: planted")  # fmt: skip
    assert tune_problems([problem], ["fwd"], timer=torch_is(lambda p: False), max_candidates=1).tuned == 1
    x, w = torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(4, 4, 3, 3, dtype=torch.float64)
    timing = tritonconv.explain(x, w, padding=1)["timing"]
    assert timing["chosen"] == "torch" and timing["triton_route"] is None and timing["triton_ms"] is None
    assert timing["torch_ms"] == 5.0 and timing["torch_over_chosen"] == 1.0
