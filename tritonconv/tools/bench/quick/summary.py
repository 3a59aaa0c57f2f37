"""The quick run's verdict: per suite and pass, the geometric mean over layers of cuDNN's time over
tritonconv's (above 1: tritonconv is faster), eager and in CUDA-graph replay, for the tuned plans,
the untimed rule and the TMA route (over the layers it serves)."""

from __future__ import annotations

import math

import pandas as pd

SPEEDUPS = ("tuned", "heuristic", "tma")


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
            row["wrong results"] = int((~of_pass["correct"].astype(bool)).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (x suffixes; n/a where nothing was timed)."""
    shown = table.copy()
    for column in shown.columns:
        if column.endswith(("eager", "graph")):
            shown[column] = shown[column].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}x")
    return shown.to_markdown(index=False)
