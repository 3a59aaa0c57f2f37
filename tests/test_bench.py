"""The benchmark studies, run end to end through the one harness on tiny layers with a stand-in timer.

Timings here mean nothing; what is checked is that every provider runs, agrees with cuDNN's role
player (torch's conv) and lands in the table, so a GPU session does not find a broken script.
"""

import pytest
import torch
from conv_reference import needs_runtime_loops

import tritonconv
from tritonconv.ops import depthwise
from tritonconv.problem.suites import SuiteLayer
from tritonconv.tools.bench import backward, epilogue, forward, harness, study, variants


@pytest.fixture
def cpu_timing(monkeypatch):
    """Every timed call runs once and counts as 1 ms (a CUDA-graph time too)."""

    def run_once(fn):
        fn()
        return 1.0, 1.0

    monkeypatch.setattr(harness, "time_call", run_once)


def layer(name: str, suite: str = "tiny", **shape) -> SuiteLayer:
    return SuiteLayer(name, 1, tritonconv.make_problem(layout="channels_last", **shape), suite)


@pytest.mark.parametrize(
    "tiny, providers",
    [
        (layer("1x1", "resnet50", n=2, c=8, h=6, w=6, k=16, r=1, s=1), {"conv1x1", "implicit_gemm", "cudnn",
                                                                         "torch.matmul"}),
        (layer("grouped", "resnext", n=2, c=16, h=6, w=6, k=16, r=3, s=3, stride=2, padding=1, groups=4),
         {"grouped_tile", "implicit_gemm", "cudnn"}),
        (layer("dw", "mobilenet", n=2, c=8, h=6, w=6, k=8, r=3, s=3, padding=1, groups=8),
         {"depthwise", "depthwise+halo", "implicit_gemm", "cudnn"}),
    ],
    ids=["1x1", "grouped", "depthwise"],
)  # fmt: skip
def test_variant_bench_rows(tiny, providers, cpu_timing):
    if not depthwise.has_gather():
        providers = providers - {"depthwise+halo"}
    rows = variants.study([tiny]).to_dict("records")
    assert {row["provider"] for row in rows} == providers
    assert all(row["max_rel_err"] < 1e-5 for row in rows), rows
    assert all(row["ms"] == 1.0 and row["tflops"] > 0 for row in rows)
    assert all(row["network"] == tiny.suite for row in rows)


def test_variant_bench_skips_layers_the_general_kernel_serves(cpu_timing):
    general = layer("3x3", n=1, c=4, h=5, w=5, k=8, r=3, s=3, padding=1)
    assert variants.study([general]).empty


def test_forward_bench_row(cpu_timing):
    (row,) = forward.study([layer("tiny 3x3", n=2, c=4, h=6, w=6, k=8, r=3, s=3, padding=1)]).to_dict("records")
    assert row["variant"] == "implicit_gemm"
    assert row["speedup"] == 1.0 and row["max_rel_err"] < 1e-5
    assert row["n"] == 2 and row["layout"] == "channels_last"


@needs_runtime_loops
def test_backward_bench_rows(cpu_timing):
    tiny = layer("tiny 3x3 s2", n=2, c=4, h=7, w=7, k=8, r=3, s=3, stride=2, padding=1)
    rows = backward.study([tiny]).to_dict("records")
    assert [row["pass"] for row in rows] == ["dgrad", "wgrad"]
    assert all(row["bitwise_reproducible"] and row["max_rel_err"] < 1e-5 for row in rows), rows


def test_epilogue_bench_rows(cpu_timing):
    """The fused-epilogue bench on a tiny layer: it runs and agrees with torch's separate ops."""
    tiny = layer("3x3", n=2, c=8, h=6, w=6, k=16, r=3, s=3, padding=1)
    rows = epilogue.study([tiny]).to_dict("records")
    assert [row["epilogue"] for row in rows] == ["bias+relu", "bias+relu+residual"]
    assert all(row["max_rel_err"] < 1e-5 and row["speedup"] == 1.0 for row in rows), rows


def test_the_harness_checks_every_provider_against_the_reference(cpu_timing):
    """A provider that computes something else is caught by its error, before any timing matters."""
    case = harness.make_case(layer("3x3", n=1, c=4, h=5, w=5, k=8, r=3, s=3, padding=1), "fwd")
    wrong = {"triton": harness.PROVIDERS["triton"], "doubled": lambda case: lambda: 2 * case.prepared.forward(
        case.x, case.weight, None)}  # fmt: skip
    rows = {row["provider"]: row for row in harness.measure(case, wrong)}
    assert rows["triton"]["max_rel_err"] < 1e-5
    assert rows["doubled"]["max_rel_err"] == pytest.approx(1.0, rel=1e-4)


def test_study_layers_read_the_suites():
    layers = study.study_layers("smoke,resnet50", batch=2, dtype=torch.float16)
    assert {layer.suite for layer in layers} == {"smoke", "resnet50"}
    assert all(layer.problem.n == 2 and layer.problem.dtype == torch.float16 for layer in layers)


@needs_runtime_loops
@pytest.mark.parametrize("name", ["forward", "backward"])
def test_the_studies_keep_the_committed_reports_columns(name, cpu_timing):
    """The H100 reports in reports/h100/ were written by the studies before the harness: same columns."""
    import pandas as pd

    committed = pd.read_csv(f"reports/h100/{name}_resnet50_bf16_channels_last.csv", nrows=1).columns
    tiny = layer("tiny 3x3", n=2, c=4, h=6, w=6, k=8, r=3, s=3, padding=1)
    columns = {"forward": forward, "backward": backward}[name].study([tiny]).columns
    assert list(columns) == [column for column in committed if column not in study.STAMP_COLUMNS]
