"""A suite's measurements as a report: the CSV (one row per layer x pass x dtype x layout), a plot a
person reads at a glance, and a Markdown summary.

Roofline times come from peaks measured on the device at the start of the run (a large matmul in
the benchmark's dtype, and a device-to-device copy), stated in the summary: datasheet peaks are not
what a program reaches, and on a CPU they do not exist.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch

from .run import Measurement, device_name, on_gpu
from .timing import median_ms, stamp

SHAPE_COLUMNS = ("n", "c", "h", "w", "k", "r", "s", "stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w",
                 "groups", "p", "q")  # fmt: skip
DEPTH_COLUMNS = ("d", "t", "stride_d", "pad_d", "dil_d", "o")  # a 3-D layer's row also has its depth axis


@dataclasses.dataclass(frozen=True)
class Peaks:
    """Measured ceilings of this device for one dtype: matmul TFLOP/s and copy GB/s."""

    tflops: float
    gbps: float

    def describe(self, dtype: torch.dtype) -> str:
        return f"{self.tflops:.3g} TFLOP/s ({str(dtype).removeprefix('torch.')} matmul), {self.gbps:.3g} GB/s (copy)"


def measure_peaks(dtype: torch.dtype) -> Peaks:
    """A square matmul in `dtype` (TF32 for fp32 when torch lets convolutions use it) and a copy,
    timed on the device the benchmark runs on (8192 and 1 GiB on a GPU; small on a CPU)."""
    gpu = on_gpu()
    device, size, copy_bytes = ("cuda", 8192, 2**30) if gpu else ("cpu", 512, 2**26)
    a = torch.randn(size, size, device=device).to(dtype)
    source = torch.empty(copy_bytes // 4, device=device)
    target = torch.empty_like(source)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        matmul_ms, copy_ms = _time(lambda: a @ a, gpu), _time(lambda: target.copy_(source), gpu)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return Peaks(tflops=2 * size**3 / matmul_ms / 1e9, gbps=2 * copy_bytes / copy_ms / 1e6)


def _time(fn, gpu: bool) -> float:
    """do_bench's median on a GPU; on a CPU the median of five wall-clock runs after a warm-up."""
    if gpu:
        return median_ms(fn)
    fn()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1e3)
    return statistics.median(runs)


def rows(suite: str, measurements: Iterable[Measurement], peaks: dict[torch.dtype, Peaks]) -> pd.DataFrame:
    """The report table; `speedup` = torch_ms / triton_ms, `roofline_pct` = roofline_ms / triton_ms."""
    table = []
    for m in measurements:
        problem = m.layer.problem
        peak = peaks[problem.dtype]
        triton_ms = m.times_ms["triton"]
        roofline_ms = max(problem.flops / (peak.tflops * 1e9), problem.min_bytes / (peak.gbps * 1e6))
        row = {
            "suite": suite,
            "layer": m.layer.name,
            "count": m.layer.count,
            "pass": m.pass_name,
            **dict(zip(SHAPE_COLUMNS, _shape(problem), strict=True)),
            **({} if problem.depth is None else dict(zip(DEPTH_COLUMNS, _depth(problem), strict=True))),
            "dtype": str(problem.dtype).removeprefix("torch."),
            "layout": problem.layout,
            "variant": m.variant,
            "config": " ".join(f"{key}={value}" for key, value in m.config.items()),
            "config_source": m.config_source,
            "triton_ms": triton_ms,
            "torch_ms": m.times_ms.get("torch", math.nan),
            "speedup": m.times_ms.get("torch", math.nan) / triton_ms,
            "triton_tflops": problem.flops / triton_ms / 1e9,
            "torch_tflops": problem.flops / m.times_ms.get("torch", math.nan) / 1e9,
            "triton_gbps": problem.min_bytes / triton_ms / 1e6,
            "roofline_ms": roofline_ms,
            "roofline_pct": 100 * roofline_ms / triton_ms,
            "peak_tflops": peak.tflops,  # what the machine measured at the start of the run: `compare` reads them
            "peak_gbps": peak.gbps,
            "max_rel_err": m.max_rel_err,
            "correct": m.correct,
        }
        if "inductor" in m.times_ms:
            row["inductor_ms"] = m.times_ms["inductor"]
            row["inductor_speedup"] = m.times_ms["inductor"] / triton_ms
        for provider in ("triton", "torch", "inductor"):
            if f"{provider}_graph" in m.times_ms:
                row[f"{provider}_graph_ms"] = m.times_ms[f"{provider}_graph"]
        if "torch_graph" in m.times_ms:
            row["graph_speedup"] = m.times_ms["torch_graph"] / m.times_ms["triton_graph"]
        table.append(row)
    return stamp(pd.DataFrame(table), device_name())


def _shape(problem) -> tuple[int, ...]:
    return (problem.n, problem.c, problem.h, problem.w, problem.k, problem.r, problem.s, *problem.stride,
            *problem.padding, *problem.dilation, problem.groups, problem.p, problem.q)  # fmt: skip


def _depth(problem) -> tuple[int, ...]:
    depth = problem.depth
    return depth.size, depth.kernel, depth.stride, depth.padding, depth.dilation, problem.o


def geomean(values: pd.Series, weights: pd.Series | None = None) -> float:
    values = values.astype(float)
    weights = pd.Series(1.0, index=values.index) if weights is None else weights.astype(float)
    keep = values.notna() & (values > 0)
    if not keep.any():
        return math.nan
    return math.exp((weights[keep] * values[keep].map(math.log)).sum() / weights[keep].sum())


def summary(table: pd.DataFrame, peaks: dict[torch.dtype, Peaks], command: str) -> str:
    """The Markdown summary: per pass, dtype and layout, geomean speedups (plain and weighted by how
    often the network runs each layer), network totals, best and worst layers."""
    first = table.iloc[0]
    lines = [
        f"# {first['suite']}: tritonconv against torch",
        "",
        f"- device: {first['device']}; torch {first['torch_version']}, Triton {first['triton_version']}; "
        f"{first['timestamp']}",
        f"- command: `{command}`",
        "- measured peaks for the roofline: "
        + "; ".join(f"{str(dtype).removeprefix('torch.')}: {peak.describe(dtype)}" for dtype, peak in peaks.items()),
        "- speedup = torch_ms / triton_ms (above 1: tritonconv is faster); "
        + (
            "times are do_bench medians (host work included), graph = CUDA-graph replay medians (GPU time alone)"
            if "graph_speedup" in table
            else "times are interpreter times: medians of several wall-clock runs through Triton's interpreter "
            "(torch on the CPU), which say nothing about GPU kernels"
        ),
        "",
    ]
    header = ["pass", "dtype", "layout", "layers", "geomean speedup", "weighted by count", "triton total ms",
              "torch total ms"]  # fmt: skip
    if "inductor_speedup" in table:
        header += ["vs inductor", "inductor total ms"]
    if "graph_speedup" in table:
        header += ["graph geomean", "graph weighted"]
    header += ["best layer", "worst layer", "max rel err"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (pass_name, dtype, layout), group in table.groupby(["pass", "dtype", "layout"], sort=False):
        best, worst = group.loc[group["speedup"].idxmax()], group.loc[group["speedup"].idxmin()]
        totals = [(group[f"{provider}_ms"] * group["count"]).sum() for provider in ("triton", "torch")]
        speedups = (geomean(group["speedup"]), geomean(group["speedup"], group["count"]))
        cells = [pass_name, dtype, layout, str(len(group)), f"{speedups[0]:.2f}", f"{speedups[1]:.2f}",
                 f"{totals[0]:.3f}", f"{totals[1]:.3f}"]  # fmt: skip
        if "inductor_speedup" in table:
            cells += [
                f"{geomean(group['inductor_speedup']):.2f}",
                f"{(group['inductor_ms'] * group['count']).sum():.3f}",
            ]
        if "graph_speedup" in table:
            cells += [
                f"{geomean(group['graph_speedup']):.2f}",
                f"{geomean(group['graph_speedup'], group['count']):.2f}",
            ]
        cells += [f"{best['layer']} ({best['speedup']:.2f}x)", f"{worst['layer']} ({worst['speedup']:.2f}x)",
                  f"{group['max_rel_err'].max():.2e}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    wrong = table[~table["correct"]]
    lines.append("")
    if len(wrong):
        lines.append(f"**{len(wrong)} results exceeded their dtype's tolerance against torch:**")
        lines += [
            f"- {row.layer} {row['pass']} {row.dtype} {row.layout}: {row.max_rel_err:.3g}"
            for _, row in wrong.iterrows()
        ]
    else:
        lines.append("Every result matched torch's within its dtype's tolerance.")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path) -> None:
    """Speedup per layer against the 1.0 line, and % of roofline, one row of panels per dtype and
    layout, bars grouped by pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(table.groupby(["dtype", "layout"], sort=False))
    layers = list(dict.fromkeys(table["layer"]))
    passes = list(dict.fromkeys(table["pass"]))
    figure, axes = plt.subplots(len(groups), 2, figsize=(max(10, 0.45 * len(layers) * 2), 4.5 * len(groups)),
                                squeeze=False)  # fmt: skip
    width = 0.8 / len(passes)
    for row, ((dtype, layout), group) in enumerate(groups):
        for column, (metric, label) in enumerate(
            (("speedup", "speedup over torch (x)"), ("roofline_pct", "% of roofline"))
        ):
            axis = axes[row][column]
            for index, pass_name in enumerate(passes):
                values = group[group["pass"] == pass_name].set_index("layer")[metric].reindex(layers)
                positions = [i + (index - (len(passes) - 1) / 2) * width for i in range(len(layers))]
                axis.bar(positions, values, width, label=pass_name)
            if metric == "speedup":  # log scale: 0.5x and 2x sit equally far from the 1.0 line
                axis.set_yscale("log")
                axis.axhline(1.0, color="black", linewidth=1)
            axis.set_xticks(range(len(layers)), layers, rotation=75, ha="right", fontsize=7)
            axis.set_ylabel(label)
            axis.set_title(f"{table['suite'].iloc[0]} {dtype} {layout}: {label}")
            axis.legend(fontsize=8)
    figure.suptitle(f"tritonconv vs torch on {table['device'].iloc[0]}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(table: pd.DataFrame, peaks: dict[torch.dtype, Peaks], out: Path, argv: list[str] | None = None) -> list[Path]:
    """Write OUT.csv, OUT.png and OUT.md; return their paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path, png_path, md_path = out.with_suffix(".csv"), out.with_suffix(".png"), out.with_suffix(".md")
    table.to_csv(csv_path, index=False)
    plot(table, png_path)
    command = "tritonconv " + shlex.join(argv if argv is not None else sys.argv[1:])
    md_path.write_text(summary(table, peaks, command) + f"\n![speedup and roofline]({png_path.name})\n")
    return [csv_path, png_path, md_path]
