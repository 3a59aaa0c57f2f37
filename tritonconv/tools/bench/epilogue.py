"""Fused epilogue against cuDNN plus torch's separate ops, on a suite's layers.

A run of the bench harness (`harness.py`): providers `fused` (tritonconv's conv + bias + relu
(+ residual) in one kernel) and `unfused` (`F.conv2d` with bias, then torch's add and relu), same
tensors, one process, both results compared before timing, do_bench and CUDA-graph medians.
Usage: python -m tritonconv.tools.bench.epilogue [--suite resnet50,mobilenetv2] [--batch N] [--out CSV]
"""

from __future__ import annotations

import pandas as pd

from ...problem.suites import SuiteLayer
from ...routes.registry import Pass
from . import harness
from .study import main_for


def study(layers: list[SuiteLayer]) -> pd.DataFrame:
    """Two rows per layer (bias+relu, bias+relu+residual), in the report's columns."""
    rows = []
    for layer in layers:
        for with_residual in (False, True):
            case = harness.make_case(layer, Pass.FWD, with_residual=with_residual)
            measured = {row["provider"]: row for row in harness.measure(case, ("fused", "unfused"), "unfused")}
            fused, torch_ops = measured["fused"], measured["unfused"]
            rows.append({
                "suite": layer.suite, "layer": layer.name, "count": layer.count,
                "epilogue": "bias+relu+residual" if with_residual else "bias+relu",
                "fused_ms": fused["ms"], "torch_ms": torch_ops["ms"], "speedup": torch_ops["ms"] / fused["ms"],
                "fused_graph_ms": fused["graph_ms"], "torch_graph_ms": torch_ops["graph_ms"],
                "graph_speedup": torch_ops["graph_ms"] / fused["graph_ms"], "max_rel_err": fused["max_rel_err"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    table, _ = main_for("tritonconv.tools.bench.epilogue", __doc__, study, default_suites="resnet50,mobilenetv2")
    for (suite, epilogue), group in table.groupby(["suite", "epilogue"]):
        print(f"{suite} {epilogue}: summed graph ms fused {group['fused_graph_ms'].sum():.3f}, "
              f"torch {group['torch_graph_ms'].sum():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
