"""Forward kernel against cuDNN on a suite's layers (ResNet-50 by default), bf16, channels_last.

A run of the bench harness (`harness.py`): providers `triton api` (`tritonconv.conv2d`) and `torch`
on each layer's forward, the same tensors, checked against cuDNN before timing, do_bench and
CUDA-graph medians.
Usage: python -m tritonconv.tools.bench.forward [--suite resnet50] [--batch N] [--dtype bfloat16] [--out CSV]
"""

from __future__ import annotations

import pandas as pd

from ...problem.suites import SuiteLayer
from ...routes.registry import Pass
from . import harness
from .study import main_for


def study(layers: list[SuiteLayer]) -> pd.DataFrame:
    """One row per layer: the report's columns (triton against cuDNN, do_bench and graph medians)."""
    rows = []
    for layer in layers:
        problem = layer.problem
        case = harness.make_case(layer, Pass.FWD)
        times = {row["provider"]: row for row in harness.measure(case, ("triton api", "torch"))}
        ours, cudnn = times["triton api"], times["torch"]
        rows.append({
            "layer": layer.name, "n": problem.n, "c": problem.c, "h": problem.h, "k": problem.k, "r": problem.r,
            "stride": problem.stride[0], "dtype": str(problem.dtype).removeprefix("torch."), "layout": problem.layout,
            "variant": case.prepared.forward_plan.variant,
            "triton_ms": ours["ms"], "cudnn_ms": cudnn["ms"], "speedup": cudnn["ms"] / ours["ms"],
            "triton_graph_ms": ours["graph_ms"], "cudnn_graph_ms": cudnn["graph_ms"],
            "graph_speedup": cudnn["graph_ms"] / ours["graph_ms"],
            "triton_tflops": problem.flops / ours["ms"] / 1e9, "cudnn_tflops": problem.flops / cudnn["ms"] / 1e9,
            "max_rel_err": ours["max_rel_err"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    main_for("tritonconv.tools.bench.forward", __doc__, study, default_suites="resnet50")


if __name__ == "__main__":
    main()
