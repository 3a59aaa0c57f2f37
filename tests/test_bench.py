"""The GPU benchmark scripts, run end to end on tiny layers with CPU inputs and a stand-in timer.

Timings here mean nothing; what is checked is that every provider runs, agrees with cuDNN's role
player (torch's conv) and lands in the table, so a GPU session does not find a broken script.
"""

import pytest
import torch
from conv_reference import needs_runtime_loops

import tritonconv
from tritonconv.bench import backward, forward, timing, variants
from tritonconv.ops import depthwise


@pytest.fixture
def cpu_timing(monkeypatch, device):
    def cpu_inputs(problem):
        cl = torch.channels_last
        x = torch.randn(problem.input_shape, dtype=problem.dtype, device=device).to(memory_format=cl)
        return x, torch.randn(problem.weight_shape, dtype=problem.dtype, device=device).to(memory_format=cl)

    def run_once(fn):
        fn()
        return 1.0

    for module in (forward, variants, timing):  # timing builds backward's layer tensors
        monkeypatch.setattr(module, "channels_last_inputs", cpu_inputs)
    for module in (forward, variants, backward):
        monkeypatch.setattr(module, "median_ms", run_once)
        if hasattr(module, "graph_ms"):
            monkeypatch.setattr(module, "graph_ms", run_once)


@pytest.mark.parametrize(
    "layer, providers",
    [
        (("resnet50", "1x1", 8, 6, 16, 1, 1, 0, 1), {"conv1x1", "implicit_gemm", "cudnn", "torch.matmul"}),
        (("resnext", "grouped", 16, 6, 16, 3, 2, 1, 4), {"grouped_tile", "implicit_gemm", "cudnn"}),
        (("mobilenet", "dw", 8, 6, 8, 3, 1, 1, 8), {"depthwise", "depthwise+halo", "implicit_gemm", "cudnn"}),
    ],
    ids=["1x1", "grouped", "depthwise"],
)
def test_variant_bench_rows(layer, providers, cpu_timing):
    if not depthwise.HAS_GATHER:
        providers = providers - {"depthwise+halo"}
    rows = variants.bench_layer(layer, batch=2, dtype=torch.float32)
    assert {row["provider"] for row in rows} == providers
    assert all(row["max_rel_err"] < 1e-5 for row in rows), rows
    assert all(row["ms"] == 1.0 and row["tflops"] > 0 for row in rows)


def test_forward_bench_row(cpu_timing):
    row = forward.bench_layer(("tiny 3x3", 4, 6, 8, 3, 1, 1), batch=2, dtype=torch.float32)
    assert row["variant"] == "implicit_gemm"
    assert row["speedup"] == 1.0 and row["max_rel_err"] < 1e-5


@needs_runtime_loops
def test_backward_bench_rows(cpu_timing):
    rows = backward.bench_layer(("tiny 3x3 s2", 4, 7, 8, 3, 2, 1), batch=2, dtype=torch.float32)
    assert [row["pass"] for row in rows] == ["dgrad", "wgrad"]
    assert all(row["bitwise_reproducible"] and row["max_rel_err"] < 1e-5 for row in rows), rows


def test_epilogue_bench_rows(monkeypatch, device):
    """The fused-epilogue bench on a tiny layer, CPU inputs, a stand-in timer: it runs and agrees."""
    from tritonconv.bench import epilogue
    from tritonconv.suites import SuiteLayer

    for name in ("median_ms", "graph_ms"):
        monkeypatch.setattr(epilogue, name, lambda fn: fn() is not None and 1.0)
    problem = tritonconv.make_problem(n=2, c=8, h=6, w=6, k=16, r=3, s=3, padding=1, layout="channels_last")
    rows = [epilogue.bench_layer("tiny", SuiteLayer("3x3", 1, problem), residual, device) for residual in (False, True)]
    assert [row["epilogue"] for row in rows] == ["bias+relu", "bias+relu+residual"]
    assert all(row["max_rel_err"] < 1e-5 and row["speedup"] == 1.0 for row in rows), rows
