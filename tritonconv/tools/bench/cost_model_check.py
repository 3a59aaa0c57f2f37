"""Check the static cost model (`tuning/cost_model.py`) against configs timed on a GPU: per layer,
the Spearman rank correlation between the model's seconds and the measured ones, where the
measured-best config falls in the model's ranking, and whether it is in the model's top 8 (what the
quick GPU run would time). Reads a sweep CSV (one row per layer and config, a `graph_ms` column:
`reports/h100/wgrad_sweep_*.csv`) and writes a markdown report beside it.

Usage: python -m tritonconv.tools.bench.cost_model_check [SWEEP_CSV] [--pass wgrad] [--out MD]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from ...problem.config import KernelConfig
from ...problem.suites import load_suite
from ...tuning.cost_model import H100_SXM, DeviceModel, estimate

SWEEP = Path("reports/h100/wgrad_sweep_resnet50_bf16_channels_last.csv")
TOP = 8
CONFIG_FIELDS = [field.name for field in dataclasses.fields(KernelConfig)]


def modelled(sweep: pd.DataFrame, suite: str, pass_name: str, device: DeviceModel = H100_SXM) -> pd.DataFrame:
    """The sweep with the model's seconds per row (`model_ms`), its layers' problems from `suite`."""
    problems = {layer.name: layer.problem for layer in load_suite(suite)}
    rows = []
    for _, row in sweep.iterrows():
        fields = {name: row[name] for name in CONFIG_FIELDS if name in row and pd.notna(row[name])}
        config = KernelConfig(**{name: bool(value) if name == "halo_in_registers" else int(value)
                                 for name, value in fields.items()})  # fmt: skip
        rows.append(estimate(problems[row["layer"]], pass_name, config, device).seconds * 1e3)
    return sweep.assign(model_ms=rows)


def summary(table: pd.DataFrame, measured: str = "graph_ms") -> pd.DataFrame:
    """Per layer: configs, Spearman rho, the measured-best config's rank in the model, in top 8."""
    rows = []
    for layer, group in table.groupby("layer", sort=False):
        model_rank = group["model_ms"].rank(method="first")
        best = group[measured].idxmin()
        rows.append({
            "layer": layer, "configs": len(group),
            "spearman": group["model_ms"].rank().corr(group[measured].rank()),
            "best_measured_ms": group[measured].min(), "model_rank_of_best": int(model_rank[best]),
            f"best_in_model_top_{TOP}": bool(model_rank[best] <= TOP),
            f"measured_ms_of_model_top_{TOP}_best": group.loc[model_rank <= TOP, measured].min(),
        })  # fmt: skip
    return pd.DataFrame(rows)


def report(table: pd.DataFrame, source: Path, pass_name: str) -> str:
    """The markdown report: what was compared, the per-layer summary, the assumptions."""
    lines = [
        "# The static cost model against the H100 sweep",
        "",
        f"Source: `{source.name}` ({len(table)} timed {pass_name} configs; measured = `graph_ms`, CUDA-graph "
        "replay on an H100 80GB HBM3, Triton 3.6.0, torch 2.11). Model: `tritonconv/tuning/cost_model.py` "
        "with H100 SXM datasheet rates. Written by `python -m tritonconv.tools.bench.cost_model_check`.",
        "",
        summary(table).to_markdown(index=False, floatfmt=".3f"),
        "",
        "`spearman`: rank correlation of the model's and the measured times over the layer's configs (1 is a "
        f"perfect ranking). `model_rank_of_best`: where the measured-fastest config sits in the model's order; "
        f"`measured_ms_of_model_top_{TOP}_best`: the best time among the model's top {TOP}, what the quick GPU "
        "run would find.",
        "",
        "The forward and backward study CSVs beside the sweep hold one config per layer and pass, and do not "
        "record which, so they cannot rank configs; the quick run's per-candidate CSV is the next validation set.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", nargs="?", type=Path, default=SWEEP)
    parser.add_argument("--suite", default="resnet50")
    parser.add_argument("--pass", dest="pass_name", default="wgrad")
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args(argv)
    table = modelled(pd.read_csv(arguments.sweep), arguments.suite, arguments.pass_name)
    out = arguments.out or arguments.sweep.with_name("cost_model_validation.md")
    out.write_text(report(table, arguments.sweep, arguments.pass_name))
    print(summary(table).to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
