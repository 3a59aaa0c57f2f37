"""Backward passes against cuDNN's on a suite's layers (ResNet-50 by default), and reproducibility.

A run of the bench harness (`harness.py`): for dgrad and wgrad, providers `triton` (tritonconv's
prepared gradient call) and `torch`, the cuDNN backward autograd runs (`aten::convolution_backward`
on the real input, weight and grad_output, asking for one gradient), on the same tensors.
`torch.nn.grad.conv2d_input`/`conv2d_weight` are not the baseline: they pass an expanded stand-in
for the missing tensor, whose layout can send cuDNN down a slower path than autograd takes. Each
result is checked against cuDNN's, and run twice to show the runs are bitwise equal.
Usage: python -m tritonconv.tools.bench.backward [--suite resnet50] [--batch N] [--dtype bfloat16] [--out CSV]
"""

from __future__ import annotations

import pandas as pd

from ...problem.suites import SuiteLayer
from ...routes.registry import Pass
from . import harness
from .study import main_for


def study(layers: list[SuiteLayer]) -> pd.DataFrame:
    """One row per layer and gradient pass, in the report's columns."""
    rows = []
    for layer in layers:
        for pass_name in (Pass.DGRAD, Pass.WGRAD):
            case = harness.make_case(layer, pass_name)
            measured = harness.measure(case, ("triton", "torch"), reproducibility=True)
            ours, cudnn = (next(row for row in measured if row["provider"] == name) for name in ("triton", "torch"))
            rows.append({
                "layer": layer.name, "pass": str(pass_name), "triton_ms": ours["ms"], "cudnn_ms": cudnn["ms"],
                "speedup": cudnn["ms"] / ours["ms"], "triton_graph_ms": ours["graph_ms"],
                "cudnn_graph_ms": cudnn["graph_ms"], "graph_speedup": cudnn["graph_ms"] / ours["graph_ms"],
                "triton_tflops": layer.problem.flops / ours["ms"] / 1e9, "max_rel_err": ours["max_rel_err"],
                "bitwise_reproducible": ours["bitwise_reproducible"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    main_for("tritonconv.tools.bench.backward", __doc__, study, default_suites="resnet50")


if __name__ == "__main__":
    main()
