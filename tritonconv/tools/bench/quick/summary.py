"""The quick run's verdict: per suite and pass, the geometric mean over layers of cuDNN's time over
tritonconv's (above 1: tritonconv is faster), eager and in CUDA-graph replay, for the tuned choice
(torch's own kernel where tuning found it faster), the best Triton candidates alone, the untimed rule
and the TMA route (over the layers it serves); and in how many layer-passes the tuned choice is a
Triton kernel (`triton wins`)."""

from __future__ import annotations

import math

import pandas as pd

SPEEDUPS = ("tuned", "triton", "heuristic", "tma")
# How the columns read in the Markdown summary.
LABELS = {"tuned": "tuned (torch where faster)", "triton": "Triton alone"}


def geomean(values: pd.Series) -> float:
    values = values[(values > 0) & values.notna() & (values != math.inf)]
    return float(math.exp(sum(math.log(v) for v in values) / len(values))) if len(values) else math.nan


def speedups(bench: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, pass) and one per suite ("all"): layers, then each provider's geomean
    speedup over torch, eager and graph."""
    torch_times = bench[bench["provider"] == "torch"].set_index("key")[["ms", "graph_ms"]]
    rows = []
    for suite, of_suite in bench.groupby("suite", sort=False):
        for pass_name, of_pass in [*of_suite.groupby("pass", sort=False), ("all", of_suite)]:
            row = {"suite": suite, "pass": pass_name, "layers": of_pass["key"].nunique()}
            for provider in SPEEDUPS:
                mine = of_pass[of_pass["provider"] == provider].set_index("key")
                against = torch_times.loc[mine.index]
                row[f"{provider} eager"] = geomean(against["ms"] / mine["ms"])
                row[f"{provider} graph"] = geomean(against["graph_ms"] / mine["graph_ms"])
            tuned = of_pass[of_pass["provider"] == "tuned"]
            variants = tuned["variant"] if "variant" in tuned else pd.Series(dtype=object)
            row["triton wins"] = f"{int((variants.notna() & (variants != 'torch')).sum())} of {len(tuned)}"
            row["wrong results"] = int((~of_pass["correct"].astype(bool)).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (x suffixes; n/a where nothing was timed)."""
    shown = table.copy()
    for column in shown.columns:
        if column.endswith(("eager", "graph")):
            shown[column] = shown[column].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}x")
    shown.columns = [_label(column) for column in shown.columns]
    return shown.to_markdown(index=False)


def _label(column: str) -> str:
    provider, _, timing = column.rpartition(" ")
    return f"{LABELS[provider]} {timing}" if provider in LABELS and timing in ("eager", "graph") else column
